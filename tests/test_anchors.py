"""Papers' numbers as printed and where a result stands beside them (metasgd_rl.anchors)."""

import math

import pytest

from metasgd_rl.anchors import BESIDE_HEADER, Anchor, beside_papers, parse_anchor, standing


@pytest.mark.parametrize(("text", "low", "high"), [
    ("≈ −75", -90.0, -60.0),        # read from a plot: ±20 % of the magnitude, unicode minus
    ("≈ 300", 240.0, 360.0),
    ("320 – 400", 320.0, 400.0),    # a range with an en dash
    ("400 - 320", 320.0, 400.0),    # either order, a hyphen
    ("< −200", -math.inf, -200.0),
    ("> 10", 10.0, math.inf),
    ("31.6", 31.6, 31.6),           # printed: exact
    ("≈ 35 %", 28.0, 42.0),         # a success rate
    ("-12.5", -12.5, -12.5),
])
def test_parse_anchor_reads_each_printed_form(text: str, low: float, high: float) -> None:
    anchor = parse_anchor(text)
    assert anchor == Anchor(pytest.approx(low), pytest.approx(high), text)


def test_anchor_interval_in_words() -> None:
    assert parse_anchor("≈ −75").interval == "-90 … -60"
    assert parse_anchor("< −200").interval == "≤ -200"
    assert parse_anchor("> 10").interval == "≥ 10"
    assert parse_anchor("31.6").interval == "31.6"


def test_parse_anchor_floor_widens_a_reading_of_zero() -> None:
    assert parse_anchor("≈ 0") == Anchor(0.0, 0.0, "≈ 0")
    assert parse_anchor("≈ 0", floor=25.0) == Anchor(-25.0, 25.0, "≈ 0")
    assert parse_anchor("≈ −75", floor=25.0) == Anchor(-100.0, -50.0, "≈ −75")  # the floor beats 20 % of 75
    assert parse_anchor("≈ 300", floor=25.0) == Anchor(240.0, 360.0, "≈ 300")   # 20 % of 300 beats the floor


@pytest.mark.parametrize("text", ["", "   "])
def test_parse_anchor_empty_means_no_number(text: str) -> None:
    assert parse_anchor(text) is None


@pytest.mark.parametrize("text", ["about 75", "≈", "75 ±", "< x", "1 – 2 – 3", "~75"])
def test_parse_anchor_refuses_an_unknown_form_naming_it(text: str) -> None:
    with pytest.raises(ValueError, match="cannot read the paper's number") as info:
        parse_anchor(text)
    assert repr(text) in str(info.value)


def test_standing_level_above_below_by_the_mean() -> None:
    paper = parse_anchor("≈ −75")  # [-90, -60]
    assert str(standing(-88.3, 4.1, paper)) == "level"
    assert str(standing(-59.0, 0.5, paper)) == "above"
    assert str(standing(-97.7, 2.0, paper)) == "below"
    # a mean outside whose seed interval reaches the paper's interval is not a clear difference
    assert str(standing(-97.7, 26.5, paper)) == "below, within the seeds' interval"
    assert str(standing(-50.0, 12.0, paper)) == "above, within the seeds' interval"
    # the interval's edges belong to the paper's number
    assert standing(-90.0, 0.0, paper).position == "level"
    assert standing(-90.001, 0.0, paper).position == "below"


def test_standing_single_seed_and_bounds() -> None:
    assert str(standing(-276.0, math.nan, parse_anchor("< −200"))) == "level"  # a NaN half-width: one seed
    assert str(standing(-150.0, math.nan, parse_anchor("< −200"))) == "above (one seed)"
    assert standing(-150.0, math.nan, parse_anchor("< −200")).clear is None
    assert str(standing(31.6, math.nan, parse_anchor("31.6"))) == "level"
    assert str(standing(20.0, 15.0, parse_anchor("31.6"))) == "below, within the seeds' interval"
    with pytest.raises(ValueError, match="must be finite"):
        standing(math.nan, 1.0, parse_anchor("31.6"))


def test_beside_papers_compares_only_the_named_rows_at_the_printed_steps() -> None:
    papers = {"Vel": [("MAML Fig. 5", ["≈ −130", "≈ −75", "", "≈ −60"], ("metasgd", "maml")),
                      ("random init, Fig. 5", ["", "< −200"], ("random-init", "pretrained")),
                      ("learn2learn, horizon 100", ["", "≈ 260"], ())],
              "Other": [("elsewhere", ["1.0"], ("metasgd",))]}
    ours = {"metasgd": [(-137.1, 29.0), (-88.3, 4.1), (-89.9, 23.8), (-84.6, 29.6)],
            "maml": [(-137.9, 15.4), (-97.7, 1.0), (-96.7, 2.8), (-98.1, 42.4)],
            "random-init": [(-276.0, math.nan), (-150.0, math.nan)]}
    rows, records = beside_papers("Vel", papers, ours, {"metasgd": "Meta-SGD", "maml": "MAML"}, floor=10.0)
    # 3 printed steps × 2 methods, one random-init step (no pretrained row, learn2learn for context only)
    assert len(rows) == len(records) == 7
    assert [(r["ours"], r["step"]) for r in records] == [
        ("metasgd", 0), ("maml", 0), ("metasgd", 1), ("maml", 1), ("metasgd", 3), ("maml", 3), ("random-init", 1)]
    assert [r["position"] for r in records] == ["level", "level", "level", "below", "below", "below", "above"]
    assert [r["clear"] for r in records] == [True, True, True, True, False, False, None]
    assert rows[3] == "| Vel | MAML Fig. 5 | 1 | ≈ −75 (-90 … -60) | MAML | -97.7 ± 1.0 | below |"
    assert rows[6].endswith("| random-init | -150.0 | above (one seed) |")
    assert all(row.count("|") == BESIDE_HEADER[0].count("|") for row in rows)
    assert beside_papers("Missing", papers, ours, {}) == ([], [])


def test_beside_papers_refuses_a_misprinted_number() -> None:
    with pytest.raises(ValueError, match="'about 75'"):
        beside_papers("Vel", {"Vel": [("typo", ["about 75"], ("maml",))]}, {"maml": [(0.0, 1.0)]}, {})
