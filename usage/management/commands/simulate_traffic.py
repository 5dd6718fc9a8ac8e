"""Send realistic fleet traffic to a running console: admission checks, then usage reports."""

import json
import random
import time
import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime

from django.core.management.base import BaseCommand, CommandError

from studio.demo import DEVELOPER
from studio.models import ApiKey, Project, Tier, User
from usage.demo import DEMO_FLEET_TOKEN

MODELS = ["gemini-2.5-flash", "gemini-2.5-flash", "gemini-2.5-flash-lite", "gemini-2.5-pro", "gemini-2.0-flash"]


class Command(BaseCommand):
    help = "Simulate the serving fleet against a running server (default: the demo at http://127.0.0.1:8000)."

    def add_arguments(self, parser):
        parser.add_argument("--url", default="http://127.0.0.1:8000")
        parser.add_argument("--token", default=DEMO_FLEET_TOKEN, help="fleet token (default: the demo one)")
        parser.add_argument("--email", default=DEVELOPER, help="whose projects the traffic uses")
        parser.add_argument("--seconds", type=float, default=20)
        parser.add_argument("--rps", type=float, default=20, help="model requests per second")
        parser.add_argument("--seed", type=int, default=None)

    def handle(self, *args, url, token, email, seconds, rps, seed, **options):
        rng = random.Random(seed)
        keys = self._keys(email)
        if not keys:
            raise CommandError(f"{email} has no project to send traffic for.")
        admitted = denied = 0
        reasons: dict[str, int] = {}
        pending: list[dict] = []
        accepted = 0
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            started = time.monotonic()
            key, raw = rng.choice(keys)
            model = rng.choice(MODELS)
            kind = rng.choices(["generate", "batch", "count_tokens"], weights=[85, 10, 5])[0]
            tokens = int(rng.lognormvariate(7, 1.2))
            decision = self._post(
                url,
                token,
                "quota:check",
                {"api_key": raw, "model": model, "kind": kind, "estimated_input_tokens": tokens},
            )
            if decision.get("allowed"):
                admitted += 1
                status = rng.choices([200, 429, 500], weights=[95, 3, 2])[0]
                # The reservation id lets the reported usage replace the estimate admission counted.
                pending.append(self._event(key, model, kind, status, tokens, rng, decision.get("reservation_id")))
            else:
                denied += 1
                reason = decision.get("error", {}).get("quota_id") or decision.get("error", {}).get("reason", "?")
                reasons[reason] = reasons.get(reason, 0) + 1
            if len(pending) >= 50:
                accepted += self._post(url, token, "usage:report", {"events": pending})["accepted"]
                pending = []
            time.sleep(max(0.0, 1 / rps - (time.monotonic() - started)))
        if pending:
            accepted += self._post(url, token, "usage:report", {"events": pending})["accepted"]
        self.stdout.write(f"admitted {admitted}, denied {denied}, usage events accepted {accepted}")
        for reason, count in sorted(reasons.items()):
            self.stdout.write(f"  denied by {reason}: {count}")

    def _keys(self, email):
        """One fresh key per project of the user (raw secrets are never stored, so we make new ones)."""
        user = User.objects.filter(email=email).first()
        if user is None:
            return []
        keys = []
        for project in Project.objects.imported_by(user).exclude(billing_state="prepayment_due"):
            key, raw = ApiKey.issue(project=project, name="Traffic simulator", created_by=user)
            keys.append((key, raw))
        paid = [k for k in keys if k[0].project.tier != Tier.FREE]
        return keys + paid * 3  # most traffic goes to paid projects, as in real life

    def _event(self, key, model, kind, status, tokens, rng, reservation_id=None):
        output = 0 if kind == "count_tokens" else int(rng.lognormvariate(5, 1))
        reserved = {"reservation_id": reservation_id} if reservation_id else {}
        return {
            **reserved,
            "event_id": str(uuid.uuid4()),
            "key_id": str(key.pk),
            "model": model,
            "kind": kind,
            "source": rng.choices(["api", "studio"], weights=[9, 1])[0],
            "status_code": status,
            "input_tokens": tokens,
            "output_tokens": output,
            "cached_tokens": tokens // 4 if model != "gemini-2.0-flash" and rng.random() < 0.2 else 0,
            "cache_token_hours": "0",
            "occurred_at": datetime.now(UTC).isoformat(),
        }

    def _post(self, url, token, method, body):
        request = urllib.request.Request(  # noqa: S310 - the operator chooses the URL
            f"{url.rstrip('/')}/api/v1/{method}",
            data=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                return json.loads(response.read())
        except urllib.error.URLError as error:
            raise CommandError(f"{url} did not answer ({error}). Is the server running (make run)?") from error
