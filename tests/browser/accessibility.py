"""axe-core (vendored, test-only) run inside the page, and the reflow check (WCAG 1.4.10).

The script is evaluated through the DevTools protocol, so the page's strict CSP stays as it is.
"""

from pathlib import Path

AXE_SOURCE = (Path(__file__).parent / "vendor" / "axe-core-4.14.1" / "axe.min.js").read_text()
# WCAG 2.0–2.2 A and AA, axe's best practices, and its experimental rules (label-content-name-mismatch).
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22a", "wcag22aa", "best-practice", "experimental"]


def axe_violations(page) -> list[str]:
    """Each violation as 'rule-id: selector' (every node), empty when the page is clean."""
    if not page.evaluate("typeof window.axe === 'object'"):
        page.evaluate(AXE_SOURCE)
    return page.evaluate(
        """async (tags) => {
            const result = await axe.run(document, {runOnly: {type: 'tag', values: tags}});
            return result.violations.flatMap(v => v.nodes.map(n => `${v.id}: ${n.target.join(' ')}`));
        }""",
        AXE_TAGS,
    )


def horizontal_overflow(page) -> int:
    """How many CSS px the page is wider than the viewport (0 = no sideways scrolling)."""
    return page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
