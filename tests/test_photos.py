"The built-in photos install with a plain, non-editable `pip install` and work from there."
import os, subprocess, sys, zipfile
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope='module')
def wheel(tmp_path_factory):
    "A wheel built from this checkout, as `pip install .` builds it"
    out = tmp_path_factory.mktemp('wheel')
    proc = subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-q', str(ROOT),
                           '-w', str(out)], capture_output=True, text=True, cwd=out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return next(out.glob('imgclf-*.whl'))


def test_wheel_holds_the_photos(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    photos = [n for n in names if n.startswith('imgclf/flowers/') and n.endswith('.jpg')]
    assert len(photos) == 406
    assert {n.split('/')[2] for n in photos} == {'daisy', 'dandelion', 'rose', 'sunflower', 'tulip'}
    for f in ['attribution.csv', 'planted.csv', 'LICENSE-CC-BY-2.0.txt', 'README.md']: assert f'imgclf/flowers/{f}' in names
    size = sum(zipfile.ZipFile(wheel).getinfo(n).file_size for n in names if n.startswith('imgclf/flowers/'))
    assert size <= 5_000_000, size


def test_installed_copy_works(wheel, tmp_path):
    "Install the wheel into a folder of its own (not the checkout), copy the photos out of it, read the key"
    site = tmp_path/'site'
    proc = subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '--no-deps', '--target', str(site), str(wheel)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    code = ('import imgclf, imgclf.photos as p; from imgclf.core import image_files; d = p.flower_photos(); '
            'print(imgclf.__file__); print(len(image_files(d))); print(len(p.planted_problems())); print(len(p.photo_credits(d)))')
    env = {**os.environ, 'PYTHONPATH': str(site), 'IMGCLF_HOME': str(tmp_path/'home')}
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    where, n, planted, credits = proc.stdout.split()
    assert Path(where).is_relative_to(site)  # the installed copy, not this checkout
    assert (n, planted, credits) == ('406', '16', '406')
    assert len(list((tmp_path/'home'/'flowers').rglob('*.jpg'))) == 406
