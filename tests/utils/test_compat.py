"""The torchvision fix of medvl.utils.compat: timm and open_clip import through it; the core install
imports without timm, open_clip, torchvision or sentencepiece."""

from __future__ import annotations

import subprocess
import sys

BLOCKED = ("timm", "open_clip", "torchvision", "sentencepiece")


def test_timm_and_open_clip_import_through_compat() -> None:
    code = (
        "import medvl, sys\n"
        "from medvl.utils.compat import import_optional, _state\n"
        "timm = import_optional('timm'); open_clip = import_optional('open_clip')\n"
        "import torchvision\n"
        "m = timm.create_model('test_resnet', pretrained=False)\n"
        "print('ok', type(m).__name__, hasattr(open_clip, 'create_model'), _state['checked'])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().startswith("ok ResNet True True")


def test_missing_extra_names_the_pip_install() -> None:
    code = (
        "import sys\n"
        f"for name in {BLOCKED!r}: sys.modules[name] = None\n"
        "from medvl.utils.compat import MissingExtraError, import_optional\n"
        "try:\n    import_optional('open_clip', 'open_clip checkpoints')\n"
        "except MissingExtraError as exc:\n    print(exc)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "pip install 'medvl[openclip]'" in result.stdout, result.stderr[-2000:]


def test_core_modules_import_without_the_extras() -> None:
    code = (
        "import sys, pkgutil, importlib\n"
        f"for name in {BLOCKED!r}: sys.modules[name] = None\n"
        "import medvl\n"
        "skip = {'medvl.models.loading.open_clip', 'medvl.models.loading.timm', 'medvl.models.encoders.timm',\n"
        "        'medvl.models.encoders.open_clip', 'medvl.__main__'}\n"
        "names = [m.name for m in pkgutil.walk_packages(medvl.__path__, 'medvl.') if m.name not in skip]\n"
        "for name in names: importlib.import_module(name)\n"
        "from transformers import CLIPModel, AutoImageProcessor\n"
        "print(len(names))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert int(result.stdout.strip().splitlines()[-1]) > 100
