import pytest

from helpers import config
from tests.backends import once  # noqa: E402

pytestmark = once  # no Keras backend involved: checked once


def test_mode_defaults_to_full_and_reads_quick():
    assert config.read_mode({}) == "full"
    assert config.read_mode({"CIFAR10_MODE": ""}) == "full"
    assert config.read_mode({"CIFAR10_MODE": " Quick "}) == "quick"


def test_mode_typo_is_an_error_not_a_silent_full_run():
    with pytest.raises(ValueError, match="CIFAR10_MODE"):
        config.read_mode({"CIFAR10_MODE": "fast"})


def test_quick_results_never_overwrite_full_results():
    full, quick = config.settings_for("full"), config.settings_for("quick")
    assert full.results_dir != quick.results_dir
    assert quick.results_dir.parent == full.results_dir
    assert quick.max_epochs < full.max_epochs and quick.train_per_class is not None


def test_cache_dir_follows_environment(tmp_path):
    assert config.cache_dir({"CIFAR10_CACHE": str(tmp_path)}) == tmp_path


def test_tests_run_in_quick_mode():
    # conftest.py sets this before helpers is imported: notebooks under pytest are quick
    assert config.MODE == "quick"


def test_workers_cap_reads_a_whole_number_or_nothing():
    assert config.max_workers({}) is None and config.max_workers({"CIFAR10_WORKERS": " "}) is None
    assert config.max_workers({"CIFAR10_WORKERS": "3"}) == 3
    for wrong in ("0", "-1", "two", "1.5"):
        with pytest.raises(ValueError, match="CIFAR10_WORKERS"):
            config.max_workers({"CIFAR10_WORKERS": wrong})
