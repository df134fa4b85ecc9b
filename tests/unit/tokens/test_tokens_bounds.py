"""ScriptLearner: an upper bound of a foreign server's count, per script, learned from its counts."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_iterate.client.config import IterateConfig
from pytest_iterate.tokens import SCRIPTS, ScriptLearner, ScriptProfile, parse_context_error, priors_for
from pytest_iterate.tokens.bounds import OPEN_TOKENIZER_PRIORS

SMOL = "smollm2"
ENGLISH = ScriptProfile.of(latin=1300, punct=140, space=60, digits=15, template=9)
CHINESE = ScriptProfile.of(cjk=1200, punct=90, latin=60, space=10, digits=8, template=9)
# what SmolLM2 counts per cl100k token, measured against llama-cpp-python (README, token guard)
SMOL_COSTS = {
    "latin": 1.05,
    "digits": 2.3,
    "punct": 1.3,
    "space": 1.2,
    "cjk": 1.65,
    "symbols": 1.6,
    "other": 2.0,
    "template": 1.3,
}


def server_count(profile: ScriptProfile, costs: dict[str, float], rng: random.Random, noise: float) -> int:
    return round(sum(costs[s] * n * rng.uniform(1 - noise, 1 + noise) for s, n in profile.as_dict().items()))


def test_priors_by_model() -> None:
    assert priors_for("smollm2") == dict(OPEN_TOKENIZER_PRIORS)
    assert priors_for("meta-llama/Llama-3.1-8B-Instruct") == dict(OPEN_TOKENIZER_PRIORS)
    openai = priors_for("gpt-4o-mini", margin=0.05)
    assert all(hi == pytest.approx(1.05) for _, hi in openai.values())
    assert priors_for("openai/gpt-4.1") == openai


def test_before_any_count_the_bound_is_the_prior_per_class() -> None:
    learner = ScriptLearner()
    expected = sum(OPEN_TOKENIZER_PRIORS[s][1] * n for s, n in CHINESE.as_dict().items())
    assert learner.estimate("e", CHINESE, SMOL) == pytest.approx(expected, abs=1)
    assert learner.ratio("e", "cjk", SMOL) == OPEN_TOKENIZER_PRIORS["cjk"][1]
    assert learner.observations("e", SMOL) == 0


def test_english_counts_teach_nothing_about_chinese() -> None:
    """One learned ratio would bound Chinese at what English costs (1.05): the 400s of the issue."""
    rng = random.Random(7)
    learner = ScriptLearner()
    chinese_before = learner.estimate("e", CHINESE, SMOL)
    for scale in (0.4, 0.7, 1.0, 0.5, 0.9):
        english = ScriptProfile(tuple(round(n * scale) for n in ENGLISH.counts))
        learner.observe("e", english, server_count(english, SMOL_COSTS, rng, 0.02), SMOL)
    true_english = server_count(ENGLISH, SMOL_COSTS, random.Random(1), 0.0)
    assert true_english <= learner.estimate("e", ENGLISH, SMOL) <= 1.15 * true_english  # learned, tight
    assert learner.estimate("e", CHINESE, SMOL) >= 0.95 * chinese_before  # the CJK part is still the prior
    assert learner.estimate("e", CHINESE, SMOL) >= server_count(CHINESE, SMOL_COSTS, random.Random(1), 0.0)


def test_each_script_learns_its_own_cost() -> None:
    rng = random.Random(3)
    learner = ScriptLearner()
    mixes = [ENGLISH, CHINESE, ScriptProfile.of(latin=500, symbols=400, punct=50, space=40, template=9)]
    for _ in range(4):
        for mix in mixes:
            scaled = ScriptProfile(tuple(round(n * rng.uniform(0.3, 1.2)) for n in mix.counts))
            learner.observe("e", scaled, server_count(scaled, SMOL_COSTS, rng, 0.02), SMOL)
    for mix in mixes:
        true = server_count(mix, SMOL_COSTS, rng, 0.0)
        assert true <= learner.estimate("e", mix, SMOL) <= 1.15 * true
    assert learner.ratio("e", "cjk", SMOL) < 2.0 < OPEN_TOKENIZER_PRIORS["cjk"][1]


def costs_within(share: float) -> st.SearchStrategy[dict[str, float]]:
    """Servers whose cost per class lies in the middle ``share`` of the priors' intervals."""

    def inner(lo: float, hi: float) -> st.SearchStrategy[float]:
        cut = (hi - lo) * (1 - share) / 2
        return st.floats(lo + cut, hi - cut)

    return st.fixed_dictionaries({s: inner(lo, hi) for s, (lo, hi) in OPEN_TOKENIZER_PRIORS.items()})


MIXES = st.lists(
    st.dictionaries(st.sampled_from(SCRIPTS[:-1]), st.integers(1, 1500), min_size=1, max_size=7).map(
        lambda d: ScriptProfile.of(**d, template=9)
    ),
    min_size=1,
    max_size=25,
)


def true_count(profile: ScriptProfile, costs: dict[str, float]) -> float:
    return sum(costs[s] * n for s, n in profile.as_dict().items())


@settings(max_examples=150, deadline=None)
@given(costs_within(0.8), MIXES, MIXES, st.integers(0, 2**32 - 1))
def test_the_bound_holds_for_unseen_mixes(
    costs: dict[str, float], seen: list[ScriptProfile], unseen: list[ScriptProfile], seed: int
) -> None:
    """Any server whose costs per script lie well inside the priors (1 % scatter): any mix is bounded."""
    rng = random.Random(seed)
    learner = ScriptLearner()
    for profile in seen:
        counted = server_count(profile, costs, rng, 0.01)
        learner.observe("e", profile, counted, SMOL)
        assert learner.estimate("e", profile, SMOL) >= counted  # every remembered count is covered
    for profile in unseen:
        assert learner.estimate("e", profile, SMOL) >= true_count(profile, costs) * 0.99


@settings(max_examples=150, deadline=None)
@given(costs_within(1.0), MIXES, MIXES, st.integers(0, 2**32 - 1))
def test_the_sound_intervals_hold_for_any_server_within_the_priors(
    costs: dict[str, float], seen: list[ScriptProfile], unseen: list[ScriptProfile], seed: int
) -> None:
    """The intervals are a worst case, not a fit: they hold even at the edges of the priors."""
    rng = random.Random(seed)
    learner = ScriptLearner()
    for profile in seen:
        learner.observe("e", profile, server_count(profile, costs, rng, 0.01), SMOL)
    intervals = learner.intervals("e", SMOL)
    for script, cost in costs.items():
        lo, hi = intervals[script]
        assert lo <= cost * 1.0001 and cost <= hi * 1.0001
    for profile in unseen:
        sound = sum(intervals[s][1] * n for s, n in profile.as_dict().items())
        assert sound >= true_count(profile, costs) * 0.9999


def test_a_count_above_the_prior_raises_the_classes_it_holds() -> None:
    learner = ScriptLearner()
    emoji = ScriptProfile.of(symbols=100)
    assert learner.estimate("e", emoji, SMOL) == 500
    learner.observe("e", emoji, 700, SMOL)  # a byte-level tokenizer: 7x cl100k
    assert learner.estimate("e", emoji, SMOL) >= 700
    assert learner.ratio("e", "latin", SMOL) == OPEN_TOKENIZER_PRIORS["latin"][1]  # untouched


def test_state_is_per_endpoint_and_model() -> None:
    learner = ScriptLearner()
    learner.observe("a", ENGLISH, 1600, SMOL)
    assert learner.observations("a", SMOL) == 1
    assert learner.observations("b", SMOL) == 0 and learner.observations("a", "other-model") == 0
    assert learner.estimate("b", ENGLISH, SMOL) > learner.estimate("a", ENGLISH, SMOL)


def test_from_config_takes_the_safety_margin() -> None:
    learner = ScriptLearner.from_config(IterateConfig(token_safety_margin=0.1))
    assert learner.margin == 0.1
    assert learner.ratio("x", "latin", "gpt-4o") == pytest.approx(1.1)


def test_learn_from_error_with_counts_makes_the_same_prompt_not_fit() -> None:
    learner = ScriptLearner(priors={s: (0.5, 1.05) for s in SCRIPTS})  # one that thinks it is cl100k
    prompt = ScriptProfile.of(latin=1400, template=9)
    info = parse_context_error(
        "This model's maximum context length is 2048 tokens. However, you requested 2301 tokens "
        "(1789 in the messages, 512 in the completion)."
    )
    assert learner.estimate("smol", prompt) + 512 <= 2048
    learner.learn_from_error("smol", prompt, info, max_tokens=512)
    assert learner.estimate("smol", prompt) >= 1789
    assert learner.window("smol") == 2048 and learner.window("other") is None


def test_learn_from_error_total_only_uses_our_max_tokens() -> None:
    learner = ScriptLearner(priors={s: (0.5, 1.0) for s in SCRIPTS})
    prompt = ScriptProfile.of(latin=1000)
    learner.learn_from_error("e", prompt, parse_context_error("you requested 1700 tokens"), max_tokens=500)
    assert learner.estimate("e", prompt) >= 1200


def test_learn_from_error_without_counts_raises_blindly() -> None:
    learner = ScriptLearner(priors={s: (0.5, 1.0) for s in SCRIPTS}, tighten_factor=1.25)
    prompt = ScriptProfile.of(latin=1000)
    learner.learn_from_error(
        "e", prompt, parse_context_error("the request exceeds the available context size")
    )
    assert learner.estimate("e", prompt) >= 1250
    assert learner.ratio("e", "cjk") == 1.0  # classes the prompt did not hold stay


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"margin": 0.7}, "margin=0.7 must be in"),
        ({"memory": 0}, "memory=0 must be >= 1"),
        ({"tighten_factor": 1.0}, "tighten_factor=1.0 must be > 1"),
        ({"priors": {"latin": (0.5, 1.0)}}, "priors miss class\\(es\\) digits"),
        ({"priors": {s: (2.0, 1.0) for s in SCRIPTS}}, "prior for 'latin' is \\[2.0, 1.0\\]"),
    ],
)
def test_bad_settings_name_the_value(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ScriptLearner(**kwargs)  # type: ignore[arg-type]


def test_ratio_names_unknown_classes() -> None:
    with pytest.raises(ValueError, match="unknown script class 'greek'"):
        ScriptLearner().ratio("e", "greek")
