import random

import numpy as np
import pytest
import torch

from labhelpers import env


def test_profile_follows_lab_profile(monkeypatch):
    monkeypatch.setenv("LAB_PROFILE", "full")
    assert env.profile() == "full"
    monkeypatch.setenv("LAB_PROFILE", " Quick ")
    assert env.profile() == "quick"


def test_profile_rejects_unknown_value(monkeypatch):
    monkeypatch.setenv("LAB_PROFILE", "fast")
    with pytest.raises(ValueError, match="quick' or 'full"):
        env.profile()


def test_auto_profile_is_quick_without_cuda(monkeypatch):
    monkeypatch.delenv("LAB_PROFILE", raising=False)
    env._auto_profile.cache_clear()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert env.profile() == "quick"
    env._auto_profile.cache_clear()


def test_auto_profile_is_full_with_cuda_and_gpt2(monkeypatch):
    monkeypatch.delenv("LAB_PROFILE", raising=False)
    env._auto_profile.cache_clear()
    monkeypatch.setattr(env, "device", lambda: "cuda")
    monkeypatch.setattr(env, "_gpt2_reachable", lambda: True)
    assert env.profile() == "full"
    monkeypatch.setattr(env, "_gpt2_reachable", lambda: False)
    env._auto_profile.cache_clear()
    assert env.profile() == "quick"
    env._auto_profile.cache_clear()


def test_gpt2_unreachable_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache
    assert env._gpt2_reachable() is False


def test_device_prefers_cuda_then_mps(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert env.device() == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert env.device() == "mps"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert env.device() == "cpu"


def test_seed_everything_repeats_all_generators():
    def draw():
        return random.random(), np.random.rand(), torch.rand(1).item()

    env.seed_everything(7)
    first = draw()
    env.seed_everything(7)
    assert draw() == first
    env.seed_everything(8)
    assert draw() != first


def test_colab_and_binder_detection(monkeypatch):
    monkeypatch.delitem(__import__("sys").modules, "google.colab", raising=False)
    assert env.in_colab() is False
    monkeypatch.setitem(__import__("sys").modules, "google.colab", object())
    assert env.in_colab() is True
    for key in ("BINDER_SERVICE_HOST", "BINDER_REQUEST", "BINDER_REPO_URL"):
        monkeypatch.delenv(key, raising=False)
    assert env.in_binder() is False
    monkeypatch.setenv("BINDER_REQUEST", "v2/gh/x/y/HEAD")
    assert env.in_binder() is True


def test_setup_cell_installs_only_on_colab():
    cell = env.SETUP_CELL
    assert 'if "google.colab" in sys.modules' in cell
    install_lines = [
        line for line in cell.splitlines() if "pip install" in line or "git clone" in line
    ]
    assert install_lines and all(line.startswith("    ") for line in install_lines)
    assert env.REPO_URL in cell


def test_setup_cell_is_a_no_op_locally(tmp_path, monkeypatch):
    """Run the cell's Python (magics replaced by a recorder) outside Colab: nothing happens."""
    calls = []
    lines = []
    for line in env.SETUP_CELL.splitlines():
        body = line.lstrip()
        if body.startswith(("!", "%")):  # IPython magics: record instead of running
            line = line[: len(line) - len(body)] + "calls.append('magic')"
        lines.append(line)
    source = "\n".join(lines)
    monkeypatch.chdir(tmp_path)
    exec(compile(source, "setup", "exec"), {"calls": calls})
    assert calls == [] and __import__("os").getcwd() == str(tmp_path)


def test_report_lists_versions_device_and_profile():
    rows = env.report()
    assert rows["torch"] == torch.__version__
    assert rows["device"] == env.device() and rows["profile"] == env.profile()
    assert rows["where"] in ("local", "colab", "binder")
