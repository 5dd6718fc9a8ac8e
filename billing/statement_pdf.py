"""A statement as a PDF (reportlab), in the reader's language.

Japanese is set in reportlab's built-in CID fonts (HeiseiKakuGo-W5, HeiseiMin-W3): the PDF viewer
supplies the glyphs, so no font file or system package is needed and `make run` keeps working.
"""

from io import BytesIO
from xml.sax.saxutils import escape

from django.utils import translation
from django.utils.formats import date_format
from django.utils.translation import gettext as _
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.cidfonts import UnicodeCIDFont
from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from billing.models import LineKind, StatementStatus
from billing.statements import Draft
from studio.templatetags.money import usd

CID_FONTS = {"ja": ("HeiseiKakuGo-W5", "HeiseiKakuGo-W5")}
LATIN_FONTS = ("Helvetica", "Helvetica-Bold")


def _fonts(language: str) -> tuple[str, str]:
    cid = CID_FONTS.get((language or "en").split("-")[0])
    if cid is None:
        return LATIN_FONTS
    for name in set(cid):
        if name not in pdfmetrics.getRegisteredFontNames():
            pdfmetrics.registerFont(UnicodeCIDFont(name))
    return cid


def render_pdf(draft: Draft, *, language: str) -> bytes:
    """The statement's page as an A4 PDF: the account, the lines, the totals and the payments."""
    with translation.override(language):
        regular, bold = _fonts(language)
        body = ParagraphStyle("body", fontName=regular, fontSize=9, leading=12)
        title = ParagraphStyle("title", fontName=bold, fontSize=16, leading=20)
        small = ParagraphStyle("small", fontName=regular, fontSize=8, leading=10)
        account = draft.account
        month = date_format(draft.month, "YEAR_MONTH_FORMAT")
        story = [
            Paragraph(_("Statement for %(month)s") % {"month": month}, title),
            Spacer(1, 3 * mm),
            Paragraph(f"{account.display_name} ({account.account_id})", body),
            Paragraph(_("Status: %(status)s") % {"status": _status_label(draft)}, body),
            Spacer(1, 5 * mm),
        ]
        rows = [[_("Description"), _("Quantity"), _("Amount")]]
        for line in draft.lines:
            rows.append([Paragraph(_describe(line, draft), small), _quantity(line), usd(line.amount)])
        rows += [
            [_("Usage total"), "", usd(draft.usage_total)],
            [_("Credits applied"), "", usd(draft.credits_total)],
            [_("Amount due"), "", usd(draft.amount_due)],
        ]
        table = Table(rows, colWidths=[110 * mm, 30 * mm, 35 * mm], repeatRows=1)
        table.setStyle(
            TableStyle(
                [
                    ("FONT", (0, 0), (-1, -1), regular, 8),
                    ("FONT", (0, 0), (-1, 0), bold, 8),
                    ("FONT", (0, -3), (-1, -1), bold, 9),
                    ("ALIGN", (1, 0), (-1, -1), "RIGHT"),
                    ("VALIGN", (0, 0), (-1, -1), "TOP"),
                    ("LINEBELOW", (0, 0), (-1, 0), 0.5, colors.black),
                    ("LINEABOVE", (0, -3), (-1, -3), 0.5, colors.black),
                ]
            )
        )
        story.append(table)
        if draft.payments:
            story += [Spacer(1, 5 * mm), Paragraph(_("Payments"), body)]
            for payment in draft.payments:
                text = f"{date_format(payment.created_at, 'SHORT_DATETIME_FORMAT')} · {usd(payment.amount)} · "
                text += str(payment.get_status_display())
                if payment.failure_code:
                    text += f" · {payment.failure_reason}"
                story.append(Paragraph(text, small))
        story += [
            Spacer(1, 5 * mm),
            Paragraph(
                _(
                    "Amounts are summed exactly and rounded half-up to the cent by their running total, "
                    "so the lines add up to the totals."
                ),
                small,
            ),
        ]
        out = BytesIO()
        document = SimpleDocTemplate(
            out,
            pagesize=A4,
            title=_("Statement for %(month)s") % {"month": month},
            author="Studio Console",
            leftMargin=18 * mm,
            rightMargin=18 * mm,
            topMargin=18 * mm,
            bottomMargin=18 * mm,
        )
        document.build(story)
        return out.getvalue()


def _status_label(draft: Draft) -> str:
    return str(StatementStatus(draft.status).label) if draft.status else _("Estimate")


def _describe(line, draft: Draft) -> str:
    if line.kind != LineKind.USAGE:
        return escape(str(line.label))
    parts = [line.project.name if line.project else str(line.label), line.model_id]
    if line.sku:
        parts.append(str(line.get_sku_display()))
    if line.batch:
        parts.append(_("batch"))
    if line.long_prompt:
        parts.append(_("long prompt"))
    text = " · ".join(part for part in parts if part)
    if line.is_late(draft.month):
        text += " · " + _("late usage of %(month)s") % {"month": line.late_month_label}
    return escape(text)


def _quantity(line) -> str:
    if line.kind != LineKind.USAGE or not line.project_id:
        return ""
    return line.shown_quantity
