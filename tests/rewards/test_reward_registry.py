"""The registry: decorator, duplicates, suggestions, create(spec), and entry points of a really installed
third-party distribution (tests/fixtures/dummy_plugin), with no patching of the lookup."""
import importlib
import shutil
import subprocess
import sys
import warnings
from importlib import metadata
from pathlib import Path

import pytest

import reward_models as rm
from reward_models import registry
from reward_models.lexicon import SentimentReward
from reward_models.rules import LengthReward

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "dummy_plugin"
DIST = "multidom-dummy-reward-plugin"


@pytest.fixture
def scratch_registry():
    """Restore the registry after a test that registers names."""
    saved = dict(registry._REGISTRY)
    yield
    registry._REGISTRY.clear()
    registry._REGISTRY.update(saved)


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory):
    """pip-install the dummy distribution into this environment (offline, no build isolation); uninstall after."""
    src = tmp_path_factory.mktemp("plugin") / "dummy_plugin"
    shutil.copytree(FIXTURE, src)
    pip = [sys.executable, "-m", "pip"]
    flags = ["--no-deps", "--no-build-isolation", "--no-index", "--no-cache-dir", "--disable-pip-version-check", "-q"]
    done = subprocess.run([*pip, "install", *flags, str(src)], capture_output=True, text=True)
    assert done.returncode == 0, f"installing the dummy plug-in failed:\n{done.stdout}\n{done.stderr}"
    importlib.invalidate_caches()
    try:
        yield metadata.distribution(DIST)
    finally:
        subprocess.run([*pip, "uninstall", "-y", "-q", DIST], capture_output=True, text=True)
        importlib.invalidate_caches()


def test_builtins_are_listed_with_descriptions():
    names = rm.available()
    for name in ("hf_classifier", "column", "length", "brevity", "regex", "format", "sentiment",
                 "non_offensive", "relevance", "callable"):
        assert name in names and names[name], name


def test_decorator_duplicates_and_replace(scratch_registry):
    @rm.register("twice_length")
    def twice_length(*, name: str = "twice_length"):
        """Two times the length in words."""
        return LengthReward(name=name)

    assert rm.available()["twice_length"] == "Two times the length in words."
    assert rm.create("twice_length").name == "twice_length"
    with pytest.raises(ValueError, match="'twice_length' is already registered .*replace=True"):
        rm.register("twice_length")(twice_length)
    with pytest.raises(ValueError, match="'length' is already registered"):
        rm.register("length", description="mine")(LengthReward)
    rm.register("twice_length", description="replaced", replace=True)(twice_length)
    assert rm.available()["twice_length"] == "replaced"


def test_unknown_name_suggests_close_matches():
    with pytest.raises(ValueError, match="unknown reward model 'sentimnet'; did you mean 'sentiment'"):
        rm.create("sentimnet")
    with pytest.raises(ValueError, match="unknown reward model 'zzzz' \\(available: brevity, callable"):
        rm.create({"type": "zzzz"})


def test_create_from_yaml_like_specs():
    m = rm.create({"type": "length", "unit": "chars", "target": 3, "name": "len3"})
    assert (m.name, m.unit, m.target) == ("len3", "chars", 3)
    assert m(["p"], ["abcde"]) == [-2.0]
    assert rm.create("regex", pattern="x", name="has_x")(["p"], ["xx"]) == [1.0]
    with pytest.raises(ValueError, match="reward model 'length': .*'colour'.*accepted parameters: unit, target"):
        rm.create({"type": "length", "colour": "red"})
    with pytest.raises(ValueError, match="needs a 'type' key"):
        rm.create({"unit": "words"})
    with pytest.raises(ValueError, match="must be a name or a mapping"):
        rm.create(3)
    built = LengthReward()
    assert rm.create(built) is built


def test_entry_point_plugin_from_installed_distribution(installed_plugin):
    eps = {ep.name for ep in installed_plugin.entry_points if ep.group == rm.ENTRY_POINT_GROUP}
    assert eps == {"exclamations", "dummy_broken", "sentiment"}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        names = rm.available()
    messages = sorted(str(w.message) for w in caught if issubclass(w.category, RuntimeWarning))
    assert len(messages) == 2, messages
    assert messages[0].startswith("multidom reward plug-in 'dummy_broken' from multidom-dummy-reward-plugin")
    assert messages[1].startswith("multidom reward plug-in 'sentiment' from multidom-dummy-reward-plugin")
    assert "exclamations" in names and "dummy_broken" not in names
    model = rm.create({"type": "exclamations", "weight": 2.0})
    assert type(model).__module__ == "multidom_dummy_reward_plugin"
    assert model(["p", "q"], ["wow!!", "ok"]) == [4.0, 0.0]
    assert rm.RewardBank(["exclamations", "length"])(["p"], ["a b!"]).values.tolist() == [[1.0, 2.0]]
    # the broken plug-in is reported by name; built-ins keep working and cannot be replaced by a plug-in
    errors = rm.plugin_errors()
    assert "AttributeError" in errors["dummy_broken"] and "does_not_exist" in errors["dummy_broken"]
    assert "cannot replace" in errors["sentiment"]
    with pytest.raises(ValueError, match="'dummy_broken' is a plug-in that failed to load"):
        rm.create("dummy_broken")
    assert isinstance(rm.create("sentiment"), SentimentReward)
    assert rm.available()["exclamations"] == "Number of exclamation marks in the completion."


def test_a_factory_that_raises_is_named():
    from reward_models import registry

    def broken(**_):
        raise RuntimeError("weights file is corrupt")

    registry.register("broken_rm_for_test", description="raises")(broken)
    try:
        with pytest.raises(RuntimeError, match="reward model 'broken_rm_for_test' could not be built: weights file"):
            registry.create("broken_rm_for_test")
    finally:
        registry._REGISTRY.pop("broken_rm_for_test", None)


def test_hf_classifier_refuses_a_quoted_false():
    from reward_models import create

    with pytest.raises(ValueError, match="trust_remote_code must be true or false"):
        create({"type": "hf_classifier", "model": "/nonexistent/rm", "trust_remote_code": "false"})
