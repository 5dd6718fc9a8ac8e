"""quota:check in one Redis round trip (issue 14): the key, its project, the limits and the counting in one script.

The script finds the key's record in the admission store (usage.admission_store), its project's record and the
catalog's figures for the project's tier and the model, decides what the database path decides (usage.admission
`check_from_database`: the same denials, in the same order), builds the same limits as `admission.limits_for` (the
tier's figures raised by the project's override, the spend limit, the monthly spend cap) and counts them with the
limiter's own script (usage.limiter `_CHECK_SCRIPT`, run as a function of the same script, so the windows, the
all-or-nothing rule and the denials on record are the limiter's). It also notes the key's last use (``adm:used``).

The spend estimate is the only figure computed here before the call: it needs the model's price, which this process
holds (usage.catalog, reloaded every CATALOG_TTL_SECONDS, as ingestion rates with it).

What the script cannot answer it says so (`None` here), and the caller answers from the database as before: a key
without a record (new, or Redis emptied; the answer is then written to the store), a project without a record (a
change is being committed), no catalog record. Redis failing: the same.

One round trip needs the store and the project's counters on one Redis: the script names keys it was not given (the
project's counters), which a Redis Cluster would refuse across slots. On a Cluster, this would be two calls: the key's
record first, then the check in the project's slot.
"""

import logging
import time
from datetime import UTC, datetime

from django.conf import settings
from django.db import DatabaseError
from redis.exceptions import RedisError

from studio import keyformat
from studio.models import Tier
from usage import admission_store, spendcap
from usage.limiter import (
    _CHECK_SCRIPT,
    KEY_TTL_MARGIN,
    MINUTE,
    PACIFIC_DAY,
    Decision,
    Limit,
    LimitState,
    RedisLimiter,
    reservation_buckets,
)

logger = logging.getLogger(__name__)

# Answers of the script, first item.
UNKNOWN, REVOKED, NOT_STORED, COUNTED, NO_MODEL, BILLING_DISABLED, NOT_ON_FREE_TIER, NOT_COUNTED = range(8)


def _script(quota_ids, tpm_window: str, spend_window: str) -> str:
    tiers = ", ".join(
        f"{tier}={{'{ids['rpm']}', '{ids['tpm']}', '{ids['rpd']}', '{ids['spend']}'}}"
        for tier, ids in ((tier, quota_ids(tier)) for tier in Tier.values)
    )
    prelude = """
-- ARGV: 1 secret hash, 2 model, 3 kind, 4 estimated input tokens, 5 spend estimate (micro-USD), 6 "1": the model is
-- priced (the spend limit applies), 7 "1": leave the monthly spend cap out, 8 the calendar, comma-separated: the three
-- Pacific days around now (start, end, id each), the three Pacific months, the reservation minutes; 9 the keys' TTL
-- margin. (One calendar argument rather than 19: packing arguments is a good part of a check's CPU.)
local QUOTAS = {TIERS}
local rec = redis.call('HGET', 'adm:k', ARGV[1])
if not rec then return {UNKNOWN} end
if rec == '-' then return {REVOKED} end
local sep = string.find(rec, ':', 1, true)
local key_pk, pk = string.sub(rec, 1, sep - 1), string.sub(rec, sep + 1)
local model = ARGV[2]
local p = redis.call('HMGET', 'adm:p:' .. pk, 'id', 't', 'st', 'cap', 'since', 'o:' .. model)
if not p[1] then return {NOT_STORED, key_pk, pk} end
local tier = p[2]
local c = redis.call('HMGET', 'adm:c', 'ok', 'm:' .. model, 'r:' .. tier .. ':' .. model, 's:' .. tier)
if not c[1] then return {NOT_STORED, key_pk, pk} end
redis.call('HSET', 'adm:used', key_pk, redis.call('TIME')[1])
local head = {0, key_pk, pk, p[1], tier, p[5] or ''}
if not c[2] then head[1] = NO_MODEL return head end
if p[3] == 'x' then head[1] = BILLING_DISABLED return head end
if tier == 'free' and c[2] ~= '1' then head[1] = NOT_ON_FREE_TIER return head end
if ARGV[3] == 'count_tokens' then head[1] = NOT_COUNTED return head end

local function figures(text)
  if not text then return nil end
  local a, b, d = string.match(text, '^([^,]*),([^,]*),([^,]*)$')
  return {tonumber(a), tonumber(b), tonumber(d)}
end
local function raised(figure, override)
  if figure == nil or override == nil then return figure end
  return math.max(figure, override)
end
local ids = QUOTAS[tier]
local codes, values, keys = {}, {}, {}
local cal = {}
for part in string.gmatch(ARGV[8], '[^,]+') do cal[#cal + 1] = part end
local argv = {'check'}
for i = 1, 9 do argv[#argv + 1] = cal[i] end
local labels = {model}
local scope = 'rl:{p' .. pk .. '}:'
local function add(code, quota, counter, window, value, cost)
  codes[#codes + 1], values[#values + 1] = code, value
  keys[#keys + 1] = scope .. counter .. ':' .. window
  argv[#argv + 1], argv[#argv + 2], argv[#argv + 3] = window, value, cost
  labels[#labels + 1] = quota
end
local rates = figures(c[3])
if rates then
  local o = figures(p[6])
  if o and tier ~= 'free' then
    rates = {raised(rates[1], o[1]), raised(rates[2], o[2]), raised(rates[3], o[3])}
  end
  if rates[1] then add('r', ids[1], ids[1] .. ':' .. model, 'minute', rates[1], 1) end
  if rates[2] then add('t', ids[2], ids[2] .. ':' .. model, 'TPM_WINDOW', rates[2], tonumber(ARGV[4])) end
  if rates[3] then add('d', ids[3], ids[3] .. ':' .. model, 'pacific_day', rates[3], 1) end
end
if c[4] and ARGV[6] == '1' then add('s', ids[4], ids[4], 'SPEND_WINDOW', tonumber(c[4]), tonumber(ARGV[5])) end
if p[4] and ARGV[7] ~= '1' then
  add('c', 'CAP_QUOTA', 'CAP_QUOTA:' .. p[5], 'pacific_month', tonumber(p[4]), tonumber(ARGV[5]))
end
head[1] = COUNTED
head[7] = table.concat(codes)
head[8] = table.concat(values, ',')
if #keys == 0 then return head end
argv[#argv + 1] = ARGV[9]
argv[#argv + 1] = table.concat(labels, '\\n')
for i = 10, 19 do argv[#argv + 1] = cal[i] end
local out = count(keys, argv)
for i = 1, #out do head[8 + i] = out[i] end
return head
"""
    names = {
        "{TIERS}": "{" + tiers + "}",
        "NOT_COUNTED": NOT_COUNTED,  # before COUNTED, which it contains
        "NOT_STORED": NOT_STORED,
        "UNKNOWN": UNKNOWN,
        "REVOKED": REVOKED,
        "COUNTED": COUNTED,
        "NO_MODEL": NO_MODEL,
        "BILLING_DISABLED": BILLING_DISABLED,
        "NOT_ON_FREE_TIER": NOT_ON_FREE_TIER,
        "TPM_WINDOW": tpm_window,
        "SPEND_WINDOW": spend_window,
        "CAP_QUOTA": spendcap.QUOTA_ID,
    }
    for name, value in names.items():
        prelude = prelude.replace(name, str(value))
    return "local function count(KEYS, ARGV)\n" + _CHECK_SCRIPT + "\nend\n" + prelude


class Answer:
    """What the script decided: `status` (one of the constants above), the key, its project, the effective tier; for
    COUNTED, the limits it counted and the limiter's decision."""

    __slots__ = ("decision", "key_id", "limits", "project_id", "project_pk", "status", "tier")

    def __init__(self, status, key_id=None, project_pk=None, project_id=None, tier=None, limits=(), decision=None):
        self.status, self.key_id, self.project_pk, self.project_id = status, key_id, project_pk, project_id
        self.tier, self.limits, self.decision = tier, limits, decision


class RedisAdmission:
    """The script, registered on the limiter's Redis client (its timeout: an outage costs a check at most that)."""

    def __init__(self, limiter: RedisLimiter) -> None:
        from usage import admission  # admission imports this module

        self._admission = admission
        self._limiter = limiter
        self._calendar_cache = (None, "")
        self._script = limiter._redis.register_script(
            _script(admission.quota_ids, admission.TPM_WINDOW, admission.SPEND_WINDOW)
        )

    def check(self, *, raw_key: str, model_id: str, kind: str, estimated_input_tokens: int, catalog) -> Answer | None:
        """The script's answer, or None if the store cannot answer (no record, Redis failing): answer from the
        database then."""
        admission = self._admission
        estimate, priced = 0, False
        if kind != "count_tokens":
            price = catalog.price_at(model_id, datetime.now(UTC))
            model = catalog.models.get(model_id)
            priced = price is not None and price.input is not None and model is not None
            if priced:
                estimate = admission.spend_estimate(
                    model, price, kind=kind, input_tokens=estimated_input_tokens, prices=catalog.tariffs.get(price.pk)
                )
        args = [
            keyformat.hash_key(raw_key),
            model_id,
            kind,
            estimated_input_tokens,
            estimate,
            int(priced),
            0,
            self._calendar(time.time()),
            KEY_TTL_MARGIN,
        ]
        try:
            reply = self._script(args=args)
            for _ in range(2):  # a monthly counter without its seed: seed it once, then check again
                if reply[0] != COUNTED or len(reply) < 9 or int(reply[8]) != -1:
                    break
                if not self._seed(reply, model_id, estimated_input_tokens, estimate):
                    args[6] = 1  # the books cannot be read: this check goes without the cap (logged)
                reply = self._script(args=args)
        except RedisError as error:
            self._limiter.fallbacks += 1
            self._limiter._fallback_warning.note(error)
            return None
        status = int(reply[0])
        if status in (UNKNOWN, NOT_STORED):
            return None
        if status == REVOKED:
            return Answer(REVOKED)
        key_id, project_pk, project_id, tier = int(reply[1]), int(reply[2]), reply[3].decode(), reply[4].decode()
        if status != COUNTED:
            return Answer(status, key_id, project_pk, project_id, tier)
        limits = self._limits(reply, project_pk, model_id, estimated_input_tokens, estimate)
        if not limits:
            return Answer(status, key_id, project_pk, project_id, tier, limits, Decision(True, [], None))
        out = reply[8:]
        states = [
            LimitState(limit.quota_id, limit.limit, int(out[2 + 2 * i]), int(out[3 + 2 * i]))
            for i, limit in enumerate(limits)
        ]
        exceeded_at = int(out[1])
        if exceeded_at:
            decision = Decision(False, states, states[exceeded_at - 1])
        else:
            scope = admission.project_scope(project_pk)
            decision = Decision(True, states, None, self._limiter._signer.issue(scope, limits, int(out[-1])))
        return Answer(status, key_id, project_pk, project_id, tier, limits, decision)

    def _calendar(self, now: float) -> str:
        """The days, months and reservation minutes the script needs, as one argument (remade when they change)."""
        key = (self._limiter._days.around(now), self._limiter._months.around(now), reservation_buckets())
        cached = self._calendar_cache  # one read: another thread may replace it, never half of it
        if cached[0] != key:
            days, months, buckets = key
            values = (*days[0], *days[1], *days[2], *months[0], *months[1], *months[2], buckets)
            cached = self._calendar_cache = (key, ",".join(str(value) for value in values))
        return cached[1]

    def _limits(self, reply, project_pk: int, model_id: str, tokens: int, estimate: int) -> list[Limit]:
        """The limits the script counted, as `admission.limits_for` builds them (for the answer and the reservation
        id's signature)."""
        admission = self._admission
        ids = admission.quota_ids(reply[4].decode())
        codes = reply[6].decode() if reply[6] else ""
        values = [int(value) for value in reply[7].decode().split(",")] if codes else []
        limits = []
        for code, value in zip(codes, values, strict=True):
            if code == "r":
                counter = admission.per_model_counter(ids["rpm"], model_id)
                limits.append(Limit(ids["rpm"], MINUTE, value, 1, counter=counter))
            elif code == "t":
                counter = admission.per_model_counter(ids["tpm"], model_id)
                limits.append(
                    Limit(
                        ids["tpm"], admission.TPM_WINDOW, value, tokens, counter=counter, settles=admission.INPUT_TOKENS
                    )
                )
            elif code == "d":
                counter = admission.per_model_counter(ids["rpd"], model_id)
                limits.append(Limit(ids["rpd"], PACIFIC_DAY, value, 1, counter=counter))
            elif code == "s":
                limits.append(Limit(ids["spend"], admission.SPEND_WINDOW, value, estimate, settles=admission.MICRO_USD))
            else:
                since = datetime.fromtimestamp(int(reply[5]), UTC)
                limits.append(spendcap.cap_limit(project_pk, value, since, estimate))
        return limits

    def _seed(self, reply, model_id: str, tokens: int, estimate: int) -> bool:
        """Seed the monthly counter the script found without one (usage.limiter `_seed`). False if the database cannot
        be read."""
        project_pk = int(reply[2])
        limits = self._limits(reply, project_pk, model_id, tokens, estimate)
        scope = self._admission.project_scope(project_pk)
        keys = [f"rl:{{{scope}}}:{limit.counter_name}:{limit.window}" for limit in limits]
        try:
            self._limiter._seed(keys, limits, reply[8:])
        except DatabaseError as error:
            logger.warning(
                "quota:check: the monthly spend cap's counter cannot be seeded (%r): checked without it", error
            )
            return False
        return True


_admissions: dict[int, RedisAdmission] = {}


def for_limiter(limiter) -> RedisAdmission | None:
    """The script on `limiter`'s connection (one per limiter), or None if admission has no Redis."""
    if not settings.ADMISSION_STORE or not isinstance(limiter, RedisLimiter) or admission_store.client() is None:
        return None
    found = _admissions.get(id(limiter))
    if found is None or found._limiter is not limiter:
        found = _admissions[id(limiter)] = RedisAdmission(limiter)
    return found
