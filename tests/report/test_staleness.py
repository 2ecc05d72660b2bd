from xaibench.report.staleness import compare

BOARD = """# board

## Rankings per metric

### confidence (higher is better ↑)

| rank | model | explainer | layer | threshold | mean [95% CI] | n | p vs best |
|---|---|---|---|---|---|---|---|
| 1 | unet | score_cam | decoder2 | 0.1 | 0.6621 [0.5570, 0.7880] | 20 | best |
| 2 | unet | grad_cam | decoder2 | 0.1 | 0.6001 [0.5000, 0.7000] | 20 | 0.012 * |

## Provenance

| run | finished |
|---|---|
| a | 2026-12-01 |
"""


def test_the_same_text_with_another_provenance_is_up_to_date():
    other = BOARD.replace("2026-12-01", "2027-01-01")
    assert not compare(BOARD, other).stale


def test_a_moved_value_names_its_section_and_row():
    moved = BOARD.replace("0.6001 [0.5000", "0.5901 [0.5000")
    c = compare(BOARD, moved)
    assert c.stale and len(c.changes) == 1
    change = c.changes[0]
    assert change.section == "Rankings per metric / confidence (higher is better ↑)"
    assert change.old == [BOARD.splitlines()[9]] and "0.5901" in change.new[0]
    report = c.report("board.md", 1e-4)
    assert "1 line(s) differ" in report and "- | 2 | unet | grad_cam" in report and "+ | 2 | unet | grad_cam" in report


def test_float_noise_within_the_tolerance_is_not_a_change_but_an_integer_is():
    noisy = BOARD.replace("0.6621", "0.6622")
    assert not compare(BOARD, noisy, 1e-4).stale
    assert compare(BOARD, noisy, 0).stale  # tolerance 0: the exact text
    assert compare(BOARD, noisy.replace("0.6622", "0.6624"), 1e-4).stale
    assert compare(BOARD, BOARD.replace("| 20 | best", "| 19 | best"), 1.0).stale  # n is an integer: exact
    assert compare(BOARD, BOARD.replace("0.012 *", "0.012"), 1.0).stale  # words and marks: exact


def test_a_reordered_ranking_is_stale():
    lines = BOARD.splitlines()
    lines[8], lines[9] = lines[9].replace("| 2 |", "| 1 |"), lines[8].replace("| 1 |", "| 2 |")
    c = compare(BOARD, "\n".join(lines) + "\n")
    assert c.stale and any("grad_cam" in line for ch in c.changes for line in ch.new)


def test_added_rows_and_sections_are_stale():
    more = BOARD.replace("## Provenance", "## Layer comparison\n\n| a |\n|---|\n| 1 |\n\n## Provenance")
    c = compare(BOARD, more)
    assert c.stale and c.changes[0].old == [] and "## Layer comparison" in c.changes[0].new
