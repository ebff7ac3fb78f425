"The `imgclf` command, run as a user runs it: a subprocess, on the built-in dataset."
import json, os, re, subprocess, sys, time, urllib.request
from pathlib import Path
import pandas as pd
import pytest
from PIL import Image
from conftest import BIN, free_port


def imgclf(*args, home, timeout=600):
    return subprocess.run([str(BIN/'imgclf'), *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, 'IMGCLF_HOME': str(home)})


def test_demo_trains_reports_and_exports(demo_run):
    proc, out = demo_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    err = float(re.search(r'error rate: ([\d.]+)%', proc.stdout).group(1))
    assert 0 < err <= 30.0, proc.stdout  # five flowers, a few planted mistakes, 81 validation photos: a real error rate
    assert f'model:      {out/"model.safetensors"}' in proc.stdout
    assert f'imgclf app --model {out/"model.safetensors"}' in proc.stdout
    for f in ['model.safetensors', 'classes.csv', 'misclassified.csv', 'confusion_matrix.png', 'run.json']:
        assert (out/f).stat().st_size > 0, f
    run = json.loads((out/'run.json').read_text())
    flowers = ['daisy', 'dandelion', 'rose', 'sunflower', 'tulip']
    assert run['vocab'] == flowers and run['error_rate'] == pytest.approx(err/100, abs=1e-3)
    classes = pd.read_csv(out/'classes.csv', index_col=0)
    assert list(classes.index) == flowers and classes.images.sum() == 81
    assert len(pd.read_csv(out/'misclassified.csv')) == round(err/100*81)
    m = re.search(r'(\d+) of the 81 validation photos are planted mistakes .*; (\d+) of the (\d+) photos counted as errors', proc.stdout)
    assert m, proc.stdout  # what the error rate means on these photos
    planted, among, errors = map(int, m.groups())
    assert errors == round(err/100*81) and 0 < planted <= 16 and among <= min(planted, errors)
    assert Image.open(out/'confusion_matrix.png').size[0] > 100
    assert not list(out.rglob('*.part'))


def test_predict_folder_and_csv(demo_run, imgclf_home, tmp_path):
    _, out = demo_run
    photos = Path(imgclf_home)/'flowers'
    flowers = ['daisy', 'dandelion', 'rose', 'sunflower', 'tulip']
    csv = tmp_path/'preds.csv'
    proc = imgclf('predict', out/'model.safetensors', photos, '--csv', csv, home=imgclf_home)
    assert proc.returncode == 0, proc.stderr
    df = pd.read_csv(csv, keep_default_na=False)
    assert len(df) == 406 and set(df.label) <= set(flowers)
    truth = df.file.map(lambda f: Path(f).parent.name)
    assert (df.label == truth).mean() >= 0.8  # the training photos among them, and 16 planted mistakes
    assert ((df[flowers].sum(axis=1) - 1).abs() < 1e-3).all()


def test_predict_reports_bad_files_and_keeps_going(demo_run, imgclf_home, tmp_path):
    _, out = demo_run
    src = sorted((Path(imgclf_home)/'flowers'/'sunflower').glob('*.jpg'))[0]
    (tmp_path/'ok.jpg').write_bytes(src.read_bytes())
    (tmp_path/'broken.jpg').write_text('<html>404</html>')
    proc = imgclf('predict', out/'model.safetensors', tmp_path, home=imgclf_home)
    assert proc.returncode == 0
    assert 'ok.jpg' in proc.stdout and 'sunflower' in proc.stdout
    assert 'broken.jpg' in proc.stdout and 'not an image' in proc.stdout
    assert '1 file(s) could not be read' in proc.stderr


def test_export_checks_then_copies(demo_run, imgclf_home, tmp_path):
    _, out = demo_run
    proc = imgclf('export', out/'model.safetensors', tmp_path, home=imgclf_home)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path/'model.safetensors').read_bytes() == (out/'model.safetensors').read_bytes()
    assert 'classes daisy, dandelion, rose, sunflower, tulip' in proc.stdout
    junk = tmp_path/'junk.safetensors'; junk.write_bytes(b'nope')
    proc = imgclf('export', junk, tmp_path/'copy.safetensors', home=imgclf_home)
    assert proc.returncode == 2 and f'{junk} is not a model file' in proc.stderr
    assert not (tmp_path/'copy.safetensors').exists()
    pkl = tmp_path/'old.pkl'; pkl.write_bytes(b'\x80\x04\x95' + b'\x00' * 64)  # a pickle is refused unless asked for
    proc = imgclf('export', pkl, tmp_path/'copy.safetensors', home=imgclf_home)
    assert proc.returncode == 2 and 'is a pickle' in proc.stderr and '--allow-pickle' in proc.stderr
    proc = imgclf('predict', pkl, tmp_path, home=imgclf_home)
    assert proc.returncode == 2 and 'is a pickle' in proc.stderr


@pytest.mark.parametrize('args,message', [
    (['--epochs', '3'], '--epochs is for the fine_tune recipe only'),
    (['--epochs', '3', '--lr', '1e-3'], '--epochs and --lr are for the fine_tune recipe only'),
    (['--processes', '2'], '--processes is for --recipe fine_tune'),
    (['--recipe', 'fine-tune'], "invalid choice: 'fine-tune'"),
])
def test_fine_tune_options_need_the_fine_tune_recipe(args, message, tmp_path, imgclf_home):
    "The linear recipe (the default) has no epochs, learning rate or processes: asking for them is an error, before any picture is read"
    proc = imgclf('train', tmp_path/'no-such-folder', *args, home=imgclf_home, timeout=120)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr  # not "no such folder": the options are checked first
    assert 'Traceback' not in proc.stderr


@pytest.mark.parametrize('setup,message', [
    ('missing', 'Dataset folder not found'),
    ('empty', 'No images found in'),
    ('one_class', 'a classifier needs at least two'),
    ('empty_class', 'has 0 usable image(s)'),
    ('only_broken', 'has 0 usable image(s)'),
])
def test_train_refuses_bad_folders_clearly(setup, message, tmp_path, imgclf_home):
    data = tmp_path/'data'
    if setup != 'missing': data.mkdir()
    if setup in ('one_class', 'empty_class', 'only_broken'):
        (data/'cats').mkdir()
        for i in range(3): Image.new('RGB', (32, 32), (i*80, 0, 0)).save(data/'cats'/f'{i}.jpg')
    if setup == 'empty_class': (data/'dogs').mkdir()
    if setup == 'only_broken':
        (data/'dogs').mkdir(); (data/'dogs'/'a.jpg').write_bytes(b'\xff\xd8\xff\xe0 truncated')
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob('*'))
    proc = imgclf('train', data, home=imgclf_home, timeout=120)
    assert proc.returncode == 2
    assert message in proc.stderr and str(data) in proc.stderr
    assert 'Traceback' not in proc.stderr
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob('*')) == before  # nothing written, nothing lost


def test_predict_missing_model_is_clear(tmp_path, imgclf_home):
    proc = imgclf('predict', tmp_path/'none.safetensors', tmp_path, home=imgclf_home)
    assert proc.returncode == 2 and f'Model file not found: {tmp_path/"none.safetensors"}' in proc.stderr


def test_app_command_serves_the_app_with_voila(demo_run, imgclf_home):
    _, out = demo_run
    port = free_port()
    p = subprocess.Popen([str(BIN/'imgclf'), 'app', '--model', str(out/'model.safetensors'), '--port', str(port), '--no-browser'],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         env={**os.environ, 'IMGCLF_HOME': str(imgclf_home)})
    try:
        deadline, html = time.time() + 120, None
        while time.time() < deadline and html is None:
            try: html = urllib.request.urlopen(f'http://127.0.0.1:{port}/', timeout=60).read().decode()
            except OSError: time.sleep(1)
        assert html is not None, 'voila did not answer'
        assert 'Traceback' not in html
    finally:
        p.terminate()
        try: p.wait(20)
        except subprocess.TimeoutExpired: p.kill()


WITHOUT = '''import importlib.abc, sys
class Without(importlib.abc.MetaPathFinder):
    "As if {names} were not installed"
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {names!r}: raise ModuleNotFoundError(f'No module named {{name!r}}', name=name.split('.')[0])
sys.meta_path.insert(0, Without())
from imgclf.cli import run
run(sys.argv[1:])
'''

@pytest.mark.parametrize('missing,args,extra', [
    (['starlette'], ['serve', '--model', 'm.safetensors'], 'serve'),
    (['voila'], ['app', '--model', 'm.safetensors', '--no-browser'], 'app'),
    (['accelerate'], ['train', '.', '--recipe', 'fine_tune', '--processes', '2'], 'distributed'),
])
def test_a_missing_extra_is_named_in_one_line(missing, args, extra, tmp_path, imgclf_home):
    "A command whose extra is not installed says which one to install, in one line, before doing anything"
    script = tmp_path/'without.py'; script.write_text(WITHOUT.format(names=set(missing)))
    r = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, cwd=tmp_path, timeout=120,
                       env={**os.environ, 'IMGCLF_HOME': str(imgclf_home)})
    assert r.returncode == 2, r.stderr
    line = f'needs {missing[0]}, which is not installed. Install it with: pip install "imgclf[{extra}]"'
    assert r.stderr.count('\n') == 1 and line in r.stderr, r.stderr
