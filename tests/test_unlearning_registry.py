"""The unlearning methods' table: one place for each method's facts, readable and checkable without torch."""

from __future__ import annotations

import pytest

from cpdm.errors import CpdmError
from cpdm.unlearning import REGISTRY, SLD_PRESETS, Hyperparameter, get_method, lookup, names
from tests.test_import_boundaries import imported_modules

# What a method class would declare if it kept its own copy of the table's facts.
TABLE_FACTS = {"summary", "defaults", "help", "needs_images", "inference_time", "iterative", "check_params",
               "resolve_params"}


def test_every_entry_names_its_implementation_and_the_implementation_reads_the_table():
    from cpdm.unlearning.base import Method

    assert names() == ("esd-x", "esd-u", "uce", "ablation", "gradient-ascent", "pruning", "sld")
    for entry in REGISTRY:
        method = get_method(entry.name)
        assert method.name == entry.name and method.entry is entry
        assert method.defaults == entry.defaults and method.help == entry.help and method.summary == entry.summary
        assert (method.needs_images, method.inference_time, method.iterative) == \
            (entry.needs_images, entry.inference_time, entry.iterative)
        # No twins: below the base class, no method class declares the table's facts again.
        for cls in type(method).__mro__[: type(method).__mro__.index(Method)]:
            assert not TABLE_FACTS & set(vars(cls)), (cls.__name__, TABLE_FACTS & set(vars(cls)))
        assert all(hp.help for hp in entry.hyperparameters), entry.name


def test_defaults_resolve_and_values_given_as_text_are_converted():
    assert lookup("ESD-X").resolve_params(None) == {"iterations": 1000, "lr": 1e-5, "negative_guidance": 1.0,
                                                     "ddim_steps": 50, "start_guidance": 3.0}
    ablation = lookup("ablation").resolve_params({"scale_lr": "no", "iterations": "20", "lr": "1e-6"})
    assert ablation["scale_lr"] is False and ablation["iterations"] == 20 and ablation["lr"] == 1e-6
    assert [hp.type for hp in lookup("ablation").hyperparameters[:4]] == ["int", "float", "bool", "float"]


def test_uce_follows_its_2023_release_unless_told_and_works_out_s_p_itself():
    assert lookup("uce").resolve_params(None) == {"release": "2023", "lamb": 0.5, "erase_scale": 1.0,
                                                  "preserve_scale": "auto", "concept_type": "style", "guide": "auto",
                                                  "preserve_artists": True}
    given = lookup("uce").resolve_params({"release": 2024, "preserve_scale": "AUTO"})
    assert given["release"] == "2024" and given["preserve_scale"] == "auto"
    assert lookup("uce").resolve_params({"preserve_scale": "0.25"})["preserve_scale"] == 0.25


@pytest.mark.parametrize("method, given, message", [
    ("esd-x", {"lr": 0}, "lr must be positive, got 0"),
    ("esd-x", {"iterations": 0}, "iterations must be at least 1"),
    ("esd-x", {"iterations": "2.5"}, "iterations must be an integer"),
    ("esd-x", {"speed": 2}, r"esd-x has no hyperparameter 'speed' \(known: ddim_steps, iterations"),
    ("uce", {"lamb": "nan"}, "lamb must be a finite number"),
    ("uce", {"erase_scale": -1}, "erase_scale must not be negative"),
    ("uce", {"concept_type": "colour"}, "concept_type must be one of style, object, got 'colour'"),
    ("uce", {"release": "2025"}, "release must be one of 2023, 2024, got '2025'"),
    ("uce", {"preserve_scale": "lots"}, "preserve_scale must be a finite number or auto, got 'lots'"),
    ("uce", {"preserve_scale": "-1"}, "preserve_scale must not be negative"),
    ("ablation", {"scale_lr": "maybe"}, "scale_lr must be true or false"),
    ("gradient-ascent", {"divergence": 1}, "divergence must be above 1"),
    ("pruning", {"channel_fraction": 0}, r"channel_fraction must lie in \(0, 1\]"),
    ("pruning", {"weight_fraction": 1.5}, r"weight_fraction must lie in \(0, 1\]"),
    ("sld", {"mom_beta": 2}, r"mom_beta must lie in \[0, 1\]"),
    ("sld", {"warmup_steps": -1}, "warmup_steps must not be negative"),
    ("sld", {"preset": "gentle"}, "unknown sld preset 'GENTLE' \\(one of WEAK, MEDIUM, STRONG, MAX\\)"),
])
def test_bad_values_are_refused_with_the_reason(method, given, message):
    with pytest.raises(CpdmError, match=message):
        lookup(method).resolve_params(given)


def test_an_sld_preset_sets_the_values_and_names_override_it():
    assert lookup("sld").defaults == {"preset": "MEDIUM", **SLD_PRESETS["MEDIUM"]}
    strong = lookup("sld").resolve_params({"preset": "strong", "threshold": "0.5"})
    assert strong == {"preset": "STRONG", **SLD_PRESETS["STRONG"], "threshold": 0.5}


def test_an_unknown_method_is_refused_with_the_known_ones():
    with pytest.raises(CpdmError, match="unknown unlearning method 'forget-all' \\(known: esd-x, esd-u, uce"):
        lookup("forget-all")


def test_ranges_read_as_words():
    assert Hyperparameter("a", 1, "h", at_least=1).allowed_range() == "be at least 1"
    assert Hyperparameter("a", 1.0, "h", above=0).allowed_range() == "be positive"
    assert Hyperparameter("a", 1.0, "h", above=0, at_most=1).allowed_range() == "lie in (0, 1]"
    assert Hyperparameter("a", 1.0, "h", at_least=0, at_most=1).allowed_range() == "lie in [0, 1]"


def test_the_table_and_its_checks_load_no_torch():
    loaded = imported_modules(
        "from cpdm.unlearning import REGISTRY, lookup; "
        "[entry.resolve_params({}) for entry in REGISTRY]; lookup('sld').resolve_params({'preset': 'max'}); "
        "from cpdm.cli.unlearn_cmds import METHOD_HELP"
    )
    assert not sorted(name for name in loaded if name.split(".")[0] in ("torch", "diffusers", "open_clip"))


def test_the_command_line_lists_the_table(runner):
    from cpdm.cli import cli

    listed = runner.invoke(cli, ["variants", "methods"])
    assert listed.exit_code == 0, listed.output
    for entry in REGISTRY:
        assert f"{entry.name}: {entry.summary}" in listed.output
        for hp in entry.hyperparameters:
            assert f"    {hp.name} = {hp.default!r}    {hp.help}" in listed.output
    shown = runner.invoke(cli, ["unlearn", "--help"])
    text = " ".join(shown.output.split())
    for entry in REGISTRY:
        assert f"{entry.name} {entry.summary}" in text
    epilog = shown.output[shown.output.index("Methods ("):]
    assert max(len(line) for line in epilog.splitlines()) <= 80


def test_the_methods_that_change_no_weights_are_the_ones_generation_can_wrap():
    """The table's ``inference_time`` and the diffusion wing's wrappers name the same methods."""
    from cpdm.diffusion.variants import INFERENCE_TIME_PIPELINES

    assert {name for name in names() if lookup(name).inference_time} == set(INFERENCE_TIME_PIPELINES)
