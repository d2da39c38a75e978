"""environment.yml and pyproject.toml must list the same dependencies."""
import re

from helpers.config import PROJECT_ROOT
from tests.backends import once  # noqa: E402

pytestmark = once  # no Keras backend involved: checked once


def _normalize(req):
    name, _, spec = re.match(r"([A-Za-z0-9_.\-]+)(\[[^\]]*\])?(.*)", req.strip()).groups()
    return name.lower().replace("_", "-") + spec.replace(" ", "")


def pyproject_requirements():
    text = (PROJECT_ROOT / "pyproject.toml").read_text()
    reqs = re.findall(r'^\s*"([^"]+)",', text, flags=re.M)  # every quoted list entry, one per line
    return {_normalize(r) for r in reqs if re.match(r"[A-Za-z]", r) and not r.startswith("setuptools")}


def environment_requirements():
    reqs = set()
    in_pip = False
    for line in (PROJECT_ROOT / "environment.yml").read_text().splitlines():
        if re.match(r"\s*- pip:", line):
            in_pip = True
            continue
        m = re.match(r"\s+- ([^#]+)", line)
        if in_pip and m and not m.group(1).strip().startswith("-e"):
            reqs.add(_normalize(m.group(1)))
    return reqs


def test_environment_yml_matches_pyproject():
    py, env = pyproject_requirements(), environment_requirements()
    assert "tensorflow>=2.16" in py and "nbval>=0.11" in py  # the parser found the lists
    assert py == env, f"only in pyproject: {py - env}; only in environment.yml: {env - py}"
