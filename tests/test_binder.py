from labhelpers import env


def pins(path):
    lines = (env.REPO_ROOT / path).read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line and not line.startswith(("#", "-"))]


def test_binder_requirements_match_the_root_pins():
    assert pins("binder/requirements.txt") == pins("requirements.txt")
    root = (env.REPO_ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines()
    assert root[-1] == "-e .", "requirements.txt ends with -e . so that labhelpers installs too"


def test_binder_uses_the_cpu_torch_index_and_installs_labhelpers():
    binder_reqs = (env.REPO_ROOT / "binder/requirements.txt").read_text(encoding="utf-8")
    assert "download.pytorch.org/whl/cpu" in binder_reqs
    post_build = (env.REPO_ROOT / "binder/postBuild").read_text(encoding="utf-8")
    assert "pip install --no-deps -e ." in post_build
    assert (env.REPO_ROOT / "binder/postBuild").stat().st_mode & 0o111, (
        "postBuild must be executable"
    )
