"The `imgclf` command, run as a user runs it: a subprocess, on the built-in dataset."
import json, os, re, shutil, signal, subprocess, sys, urllib.request
from pathlib import Path
import pandas as pd
import pytest
from PIL import Image
from conftest import BIN, start_and_read_port, stop, wait_for_line


def imgclf(*args, home, timeout=600, env=None):
    return subprocess.run([str(BIN/'imgclf'), *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, 'IMGCLF_HOME': str(home), **(env or {})})


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
    assert proc.returncode == 1, proc.stderr  # the others classified, and a script can tell that one failed
    assert 'ok.jpg' in proc.stdout and 'sunflower' in proc.stdout
    assert 'broken.jpg' in proc.stdout and 'not an image' in proc.stdout
    assert '1 file(s) could not be read' in proc.stderr and 'could not be read' not in proc.stdout
    proc = imgclf('predict', out/'model.safetensors', tmp_path, '--json', home=imgclf_home)
    assert proc.returncode == 1, proc.stderr
    got = json.loads(proc.stdout)  # nothing but the JSON object on standard output
    assert (got['images'], got['failed'], got['labels']) == (2, 1, {'sunflower': 1})
    assert [(Path(p['file']).name, p['label'], p['error'] != '') for p in got['predictions']] == [('broken.jpg', '', True), ('ok.jpg', 'sunflower', False)]
    proc = imgclf('predict', out/'model.safetensors', tmp_path/'ok.jpg', home=imgclf_home)
    assert proc.returncode == 0 and 'could not be read' not in proc.stderr, proc.stderr  # all read: status 0


def test_progress_goes_to_stderr_and_quiet_leaves_it_out(demo_run, imgclf_home):
    "Standard output holds the results only: the table, one line per photo; the progress bar is on standard error, or nowhere with --quiet"
    _, out = demo_run
    photos = Path(imgclf_home)/'flowers'/'rose'
    n = len(list(photos.glob('*.jpg')))
    proc = imgclf('predict', out/'model.safetensors', photos, home=imgclf_home)
    assert proc.returncode == 0, proc.stderr
    rows = proc.stdout.splitlines()
    assert rows[0].split()[:3] == ['file', 'label', 'probability'] and len(rows) == 1 + n and '\r' not in proc.stdout
    assert '[2/2 ' in proc.stderr and '100.00%' in proc.stderr  # fastprogress's bar over the two batches of 64
    proc = imgclf('predict', out/'model.safetensors', photos, '--quiet', home=imgclf_home)
    assert (proc.returncode, proc.stderr, len(proc.stdout.splitlines())) == (0, '', 1 + n)


def test_export_checks_then_copies(demo_run, imgclf_home, tmp_path):
    _, out = demo_run
    proc = imgclf('export', out/'model.safetensors', tmp_path, home=imgclf_home)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path/'model.safetensors').read_bytes() == (out/'model.safetensors').read_bytes()
    assert 'classes daisy, dandelion, rose, sunflower, tulip' in proc.stdout
    from imgclf.modelfile import read_examples
    src, copied = read_examples(out/'model.safetensors'), read_examples(tmp_path/'model.safetensors')  # the app's example photos go along
    assert src and [(e.path.name, e.label, e.licence) for e in copied] == [(e.path.name, e.label, e.licence) for e in src]
    assert all(c.path.read_bytes() == e.path.read_bytes() for c, e in zip(copied, src))
    junk = tmp_path/'junk.safetensors'; junk.write_bytes(b'nope')
    proc = imgclf('export', junk, tmp_path/'copy.safetensors', home=imgclf_home)
    assert proc.returncode == 1 and f'{junk} is not a model file' in proc.stderr
    assert not (tmp_path/'copy.safetensors').exists()
    pkl = tmp_path/'old.pkl'; pkl.write_bytes(b'\x80\x04\x95' + b'\x00' * 64)  # a pickle is refused unless asked for
    proc = imgclf('export', pkl, tmp_path/'copy.safetensors', home=imgclf_home)
    assert proc.returncode == 1 and 'is a pickle' in proc.stderr and '--allow-pickle' in proc.stderr
    proc = imgclf('predict', pkl, tmp_path, home=imgclf_home)
    assert proc.returncode == 1 and 'is a pickle' in proc.stderr


@pytest.mark.parametrize('args,message,status', [
    (['--epochs', '3'], '--epochs is for the fine_tune recipe only', 1),
    (['--epochs', '3', '--lr', '1e-3'], '--epochs and --lr are for the fine_tune recipe only', 1),
    (['--processes', '2'], '--processes is for --recipe fine_tune', 1),
    (['--recipe', 'fine_tune', '--processes', '0'], '--processes must be 1 or more, got 0', 1),
    (['--recipe', 'fine-tune'], "invalid choice: 'fine-tune'", 2),  # a usage mistake: argparse's status
])
def test_fine_tune_options_need_the_fine_tune_recipe(args, message, status, tmp_path, imgclf_home):
    "The linear recipe (the default) has no epochs, learning rate or processes: asking for them is an error, before any picture is read"
    proc = imgclf('train', tmp_path/'no-such-folder', *args, home=imgclf_home, timeout=120)
    assert proc.returncode == status and message in proc.stderr, proc.stderr  # not "no such folder": the options are checked first
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
    assert proc.returncode == 1
    assert message in proc.stderr and str(data) in proc.stderr
    assert 'Traceback' not in proc.stderr
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob('*')) == before  # nothing written, nothing lost


def test_predict_missing_model_is_clear(tmp_path, imgclf_home):
    proc = imgclf('predict', tmp_path/'none.safetensors', tmp_path, home=imgclf_home)
    assert proc.returncode == 1 and f'Model file not found: {tmp_path/"none.safetensors"}' in proc.stderr


def test_app_command_serves_the_app_with_voila(demo_run, imgclf_home):
    "`--port 0`: the port the system chose is the one printed; the page is the app with the model loaded (the notebook ran without an error)"
    _, out = demo_run
    p, port = start_and_read_port([str(BIN/'imgclf'), 'app', '--model', str(out/'model.safetensors'), '--port', '0', '--no-browser'],
                                  env={**os.environ, 'IMGCLF_HOME': str(imgclf_home)})
    try:
        assert port > 0 and f'Serving the app with {out/"model.safetensors"} at http://127.0.0.1:{port}/' in p.lines[0]
        wait_for_line(p, 'Voil. is running at')  # listening
        html = urllib.request.urlopen(f'http://127.0.0.1:{port}/', timeout=600).read().decode()  # voila answers once the preheated kernel ran the notebook
        assert 'There was an error when executing cell' not in html, html[-3000:]  # what voila shows, tracebacks hidden, when a cell failed
        assert 'it says which of its 5 classes the photo shows' in html, html[-3000:]  # the app itself, its model loaded (the page holds its widgets)
        assert 'cannot run at the moment' not in html  # what `load_app` shows when the model could not be loaded
    finally: stop(p)


def test_a_port_in_use_is_said_not_moved(demo_run, imgclf_home):
    "A port the user names that another program listens on: one line saying so, status 1, and no server on another port"
    import socket
    _, out = demo_run
    with socket.socket() as busy:
        busy.bind(('127.0.0.1', 0)); busy.listen(); port = busy.getsockname()[1]
        for cmd in [['app', '--no-browser'], ['serve']]:
            proc = imgclf(*cmd, '--model', out/'model.safetensors', '--port', port, home=imgclf_home, timeout=300)
            assert proc.returncode == 1, proc.stderr
            assert f'Cannot listen on 127.0.0.1:{port}: another program is using that port' in proc.stderr and '--port 0' in proc.stderr
            assert 'Serving' not in proc.stdout


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
    assert r.returncode == 1, r.stderr
    line = f'needs {missing[0]}, which is not installed. Install it with: pip install "imgclf[{extra}]"'
    assert r.stderr.count('\n') == 1 and line in r.stderr, r.stderr


def small_dataset(root:Path, per_class:int=8) -> Path:
    "Two classes of the built-in photos, `per_class` each, copied under `root`"
    from imgclf.photos import flower_photos
    data = root/'two'
    for c in ['daisy', 'sunflower']:
        (data/c).mkdir(parents=True)
        for f in sorted((flower_photos()/c).glob('*.jpg'))[:per_class]: shutil.copy(f, data/c)
    return data


def test_undo_with_nothing_to_undo(imgclf_home, tmp_path):
    data = small_dataset(tmp_path, 2)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob('*'))
    proc = imgclf('undo', data, home=imgclf_home, timeout=120)
    assert proc.returncode == 1 and proc.stderr == f'imgclf undo: Nothing to undo in {data}: no applied changes that are not undone yet\n'
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob('*')) == before


def test_a_failing_training_process_stops_the_run(imgclf_home, tmp_path):
    "`train --processes 2`: the processes fail (no such folder); the command says which and how, and exits 1"
    proc = imgclf('train', tmp_path/'no-such-folder', '--recipe', 'fine_tune', '--processes', '2', home=imgclf_home, timeout=600)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert f'imgclf train: Dataset folder not found: {tmp_path/"no-such-folder"}' in proc.stderr  # what the processes said
    last = proc.stderr.strip().splitlines()[-1]
    assert re.fullmatch(r'imgclf train: [12] of 2 training processes failed: rank [01] \(status 1\).*', last), proc.stderr[-3000:]
    assert not (tmp_path/'no-such-folder-model'/'run.json').exists()


def test_ctrl_c_exits_130(imgclf_home, tmp_path):
    "SIGINT while training: one line, status 130, no traceback"
    data = small_dataset(tmp_path)
    p = subprocess.Popen([str(BIN/'imgclf'), 'train', str(data), '--recipe', 'fine_tune', '--epochs', '10', '--lr', '1e-3', '--size', '64',
                          '--bs', '4', '--out', str(tmp_path/'run')], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, 'IMGCLF_HOME': str(imgclf_home)})
    try:
        seen = []
        for line in p.stderr:  # up to the dataset's summary: training starts next
            seen.append(line)
            if 'images in 2 classes' in line: break
        assert 'images in 2 classes' in seen[-1], ''.join(seen)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=600)
    finally:
        if p.poll() is None: p.kill()
    assert p.returncode == 130, err[-3000:]
    assert err.strip().splitlines()[-1] == 'imgclf train: interrupted' and 'Traceback' not in err, err[-3000:]
    assert not (tmp_path/'run'/'model.safetensors').exists()


def test_export_allow_pickle_end_to_end(imgclf_home, tmp_path):
    "A fastai pickle, refused by default; with --allow-pickle written in the safe format, which then predicts as the pickle did"
    from imgclf.train import train_classifier
    from imgclf.model import load_model
    data = small_dataset(tmp_path)
    learn = train_classifier(data, recipe='fine_tune', size=64, epochs=1, lr=1e-3, bs=4, out=tmp_path/'run', quiet=True)
    learn.export(tmp_path/'old.pkl')
    proc = imgclf('export', tmp_path/'old.pkl', tmp_path/'new.safetensors', home=imgclf_home)
    assert proc.returncode == 1 and 'is a pickle' in proc.stderr and not (tmp_path/'new.safetensors').exists()
    proc = imgclf('export', tmp_path/'old.pkl', tmp_path/'new.safetensors', '--allow-pickle', home=imgclf_home)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f'{tmp_path/"new.safetensors"}: classes daisy, sunflower (pickle file in, safetensors out)' in proc.stdout
    photo = sorted((data/'sunflower').glob('*.jpg'))[0]
    got = load_model(tmp_path/'new.safetensors').predict(photo)
    label, _, probs = learn.predict(photo)
    assert got.label == str(label) and abs(got.probability - float(probs.max())) < 1e-3
    proc = imgclf('predict', tmp_path/'new.safetensors', photo, '--json', home=imgclf_home)
    assert proc.returncode == 0 and json.loads(proc.stdout)['predictions'][0]['label'] == got.label


def test_clean_out_writes_where_asked(imgclf_home, tmp_path):
    data = small_dataset(tmp_path, 6)
    table = tmp_path/'elsewhere'/'mine.csv'; table.parent.mkdir()
    proc = imgclf('clean', data, '--out', table, '--quiet', '--json', home=imgclf_home)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert (summary['pictures'], summary['csv']) == (12, str(table)) and proc.stderr == ''
    from imgclf.rank import KINDS
    assert set(summary['suspects']) <= set(KINDS)  # counted by kind, named as `rank_suspects` names them
    assert not (tmp_path/'two-suspects.csv').exists()  # not the default place
    t = pd.read_csv(table, keep_default_na=False)
    assert sorted(t.file) == sorted(p.relative_to(data).as_posix() for p in data.rglob('*.jpg'))
    moved = sorted((data/'daisy').glob('*.jpg'))[0]
    t.loc[t.file == f'daisy/{moved.name}', 'action'] = 'delete'; t.to_csv(table, index=False)
    proc = imgclf('clean', data, '--apply', table, home=imgclf_home)
    assert proc.returncode == 0 and not moved.exists(), proc.stderr
    proc = imgclf('undo', data, home=imgclf_home)
    assert proc.returncode == 0 and moved.exists(), proc.stderr
