"""The package's dependency rule: the layers written in ``circuits/__init__.py``, checked with import-linter."""

import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import circuits

SRC = Path(circuits.__file__).parent


def declared_layers() -> list[list[str]]:
    """The layers of the block between ``[layers]`` and ``[end]`` in the package docstring, top first."""
    block = re.search(r"\[layers\]\n(.*?)\n\s*\[end\]", circuits.__doc__, re.S)
    assert block, "circuits/__init__.py's docstring has no [layers] ... [end] block"
    return [[name.strip() for name in line.split("|")] for line in block.group(1).splitlines() if line.strip()]


def test_every_module_of_the_package_is_in_a_layer():
    named = {name for layer in declared_layers() for name in layer}
    children = {f"circuits.{m.name}" for m in pkgutil.iter_modules(circuits.__path__)}
    assert children == named, f"in no layer: {sorted(children - named)}; no such module: {sorted(named - children)}"


def test_imports_follow_the_layers(tmp_path):
    config = tmp_path / "importlinter.ini"
    lines = "\n".join("    " + " | ".join(layer) for layer in declared_layers())
    config.write_text(f"[importlinter]\nroot_package = circuits\n\n[importlinter:contract:layers]\n"
                      f"name = circuits layers\ntype = layers\nlayers =\n{lines}\n")
    linter = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(linter), "--config", str(config), "--no-cache", "--no-logo"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_broken_rule_is_caught(tmp_path):
    """The check can fail: with the layers upside down it must."""
    config = tmp_path / "importlinter.ini"
    lines = "\n".join("    " + " | ".join(layer) for layer in reversed(declared_layers()))
    config.write_text(f"[importlinter]\nroot_package = circuits\n\n[importlinter:contract:layers]\n"
                      f"name = upside down\ntype = layers\nlayers =\n{lines}\n")
    linter = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(linter), "--config", str(config), "--no-cache", "--no-logo"],
                            capture_output=True, text=True)
    assert result.returncode != 0


def test_c_sources_live_only_in_the_kernels_folder():
    stray = [p.relative_to(SRC) for p in SRC.rglob("*") if p.suffix in (".c", ".h") and "kernels" not in p.parts]
    assert not stray
    assert (SRC / "kernels" / "c" / "attention.c").is_file()
