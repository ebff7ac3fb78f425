"`imgclf.new`: from URL files served on 127.0.0.1 to an exported model, resumed after an interruption, with a planted mistake"
import csv, json, os, signal, subprocess, sys
from pathlib import Path
import pytest
from imgclf.core import ImgclfError
from imgclf.localweb import LocalWeb
from conftest import BIN

CLASSES = ('daisy', 'sunflower')
PER_CLASS = 20


@pytest.fixture(scope='module')
def web(imgclf_home):
    "The built-in photos of two classes (none of the planted problems) on a local server; one sunflower photo also in daisy's list"
    from imgclf.photos import flower_photos, planted_problems
    planted = set(planted_problems().file)
    photos = {c: [f for f in sorted((flower_photos()/c).iterdir()) if f'{c}/{f.name}' not in planted] for c in CLASSES + ('tulip',)}
    urls = {c: [f'/{c}/{f.name}' for f in fs[:PER_CLASS]] for c, fs in photos.items()}
    wrong = f'/sunflower/{photos["sunflower"][PER_CLASS].name}'  # a sunflower photo that is not in sunflower's list...
    urls['daisy'].append(wrong)  # ...but in daisy's: the planted mistake
    files = {f'/{c}/{f.name}': f.read_bytes() for c, fs in photos.items() for f in fs[:PER_CLASS + 1]}
    with LocalWeb(files) as w:
        w.urls, w.wrong = {c: [w.url + u for u in us] for c, us in urls.items()}, w.url + wrong
        yield w


def url_files(web, folder:Path, classes=CLASSES) -> dict:
    "One URL file per class in `folder`: class -> its path"
    folder.mkdir(parents=True, exist_ok=True)
    for c in classes: (folder/f'{c}.txt').write_text('\n'.join(web.urls[c]) + '\n')
    return {c: folder/f'{c}.txt' for c in classes}


def kept_file(project:Path, url:str) -> str:
    "The dataset file (class/name) the manifest says `url` was stored as"
    rows = [r for r in csv.DictReader(open(project/'data'/'manifest.csv')) if r['url'] == url]
    assert len(rows) == 1 and rows[0]['status'] == 'kept', rows
    return Path(rows[0]['file']).relative_to(project/'data').as_posix() if Path(rows[0]['file']).is_absolute() else rows[0]['file']


@pytest.fixture(scope='module')
def project(web, tmp_path_factory):
    "One whole run of `new_classifier` on the URL files: (report, project folder, requests it made)"
    from imgclf.new import new_classifier
    tmp = tmp_path_factory.mktemp('new')
    before = sum(web.hits.values())
    rep = new_classifier(tmp/'flowers', url_files(web, tmp/'urls'), progress=False)
    return rep, tmp/'flowers', sum(web.hits.values()) - before


def test_new_goes_from_url_files_to_a_model_and_reports(project, web):
    "Gathered per class as the URL files list them, the error before and after cleaning, and a model file that loads and predicts"
    from imgclf.model import load_model
    rep, path, requests = project
    test_counts = {c: rep.counts[c] for c in CLASSES}
    assert test_counts['daisy']['found'] == PER_CLASS + 1 and test_counts['sunflower']['found'] == PER_CLASS, test_counts
    for c, d in test_counts.items():  # every photo is distinct and readable: all kept, nothing dropped
        assert d['kept'] == d['found'], d
    assert requests == 2*PER_CLASS + 1  # each URL fetched once
    assert rep.skipped == [] and list(rep.steps) == ['gather', 'train', 'clean', 'retrain']
    assert rep.steps['train']['valid_images'] == 8  # 20% of 41
    assert 0 <= rep.error_before <= 0.25 and 0 <= rep.error_after <= 0.25, rep
    assert ('error_rate' in rep.steps['retrain']) == bool(rep.relabelled)  # trained again only if the cleaning moved something
    assert json.loads((path/'new.json').read_text())['steps'] == json.loads(json.dumps(rep.steps))
    clf = load_model(rep.model)
    assert rep.model == path/'model.safetensors' and sorted(clf.classes) == sorted(CLASSES)
    src = web.files[web.urls['daisy'][0].removeprefix(web.url)]
    pred = clf.predict(src)
    assert pred.label == 'daisy' and pred.probability > 0.5, pred
    text = repr(rep)
    assert f'daisy {PER_CLASS + 1} kept of {PER_CLASS + 1}' in text and 'validation error: ' in text and str(rep.model) in text


def test_the_command_opens_the_app_on_the_new_model(project, web):
    "On a finished project every step is skipped; then the command becomes `imgclf app` on the project's model"
    from conftest import start_and_read_port, stop
    rep, path, _ = project
    specs = [a for c in CLASSES for a in ('--class', f'{c}={path.parent/"urls"/c}.txt')]
    proc, port = start_and_read_port([sys.executable, '-m', 'imgclf.new', str(path), *specs, '--port', '0', '--no-browser', '--quiet'],
                                     env=os.environ)
    try:
        out = ''.join(proc.lines)
        assert '(finished earlier: gather, train, clean, retrain)' in out and f'Serving the app with {rep.model} at http://' in out, out
    finally: stop(proc)


def test_a_planted_mistake_is_relabelled_or_reported(project, web):
    "The sunflower photo in the daisy list ends up in sunflower (moved, logged, undoable) or is listed as a suspect"
    rep, path, _ = project
    wrong = kept_file(path, web.wrong)
    assert wrong.startswith('daisy/'), wrong
    moved = [m for m in rep.relabelled if m['file'] == wrong]
    if moved:
        assert moved[0]['to'] == 'sunflower' and moved[0]['p'] >= 0.7, moved
        assert (path/'data'/'sunflower'/Path(wrong).name).exists() and not (path/'data'/wrong).exists()
        from imgclf.changes import last_undoable
        assert str(last_undoable(path/'data')) == rep.steps['clean']['log']
    else:
        assert wrong in [u['file'] for u in rep.steps['clean']['unsure']], rep.steps['clean']
    # every move was a daisy/sunflower swap the models were sure of
    assert all(m['to'] in CLASSES and m['to'] != m['label'] and m['p'] >= 0.7 for m in rep.relabelled)


class CtrlC(dict):
    "The files of a `LocalWeb` that press Ctrl-C (SIGINT to this process) once, when the `after`th one is served"
    def __init__(self, files, after:int): super().__init__(files); self.left = after
    def __getitem__(self, k):
        self.left -= 1
        if self.left == 0: os.kill(os.getpid(), signal.SIGINT)
        return super().__getitem__(k)


def test_a_second_run_goes_on_from_the_last_finished_step(web, tmp_path, monkeypatch):
    "Interrupted while gathering, then while training: each rerun downloads only what is missing; the last (the command line) trains and reports"
    import imgclf.new
    classes = {'daisy': web.urls['daisy'][:PER_CLASS], 'tulip': web.urls['tulip']}
    for c, us in classes.items(): (tmp_path/f'{c}.txt').write_text('\n'.join(us))
    sources = {c: str(tmp_path/f'{c}.txt') for c in classes}
    real_train = imgclf.new.train_classifier
    def interrupted(*a, **kw): raise KeyboardInterrupt
    hits = lambda: sum(web.hits[u.removeprefix(web.url)] for us in classes.values() for u in us)
    web.files = CtrlC(web.files, after=12)  # Ctrl-C while the 12th picture is being served
    try:
        with pytest.raises(KeyboardInterrupt): imgclf.new.new_classifier(tmp_path/'p', sources, progress=False)
    finally: web.files = dict(web.files)
    first = hits()
    stored = [r for r in csv.DictReader(open(tmp_path/'p'/'data'/'manifest.csv')) if r['status'] == 'kept']
    assert 0 < len(stored) < 2*PER_CLASS and json.loads((tmp_path/'p'/'new.json').read_text())['steps'] == {}
    monkeypatch.setattr(imgclf.new, 'train_classifier', interrupted)
    with pytest.raises(KeyboardInterrupt): imgclf.new.new_classifier(tmp_path/'p', sources, progress=False)
    assert hits() - first == 2*PER_CLASS - len(stored)  # the gather was topped up: what was stored is not fetched again
    state = json.loads((tmp_path/'p'/'new.json').read_text())
    assert list(state['steps']) == ['gather'] and state['steps']['gather']['kept'] == 2*PER_CLASS
    assert not (tmp_path/'p'/'model.safetensors').exists()
    monkeypatch.setattr(imgclf.new, 'train_classifier', real_train)
    specs = [a for c in classes for a in ('--class', f'{c}={tmp_path/c}.txt')]  # the same request: the same sources, as strings
    before = hits()
    proc = subprocess.run([str(BIN/'imgclf'), 'new', str(tmp_path/'p'), *specs, '--no-app'],  # the console script's `new`
                          capture_output=True, text=True, timeout=600, env=os.environ)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert hits() == before  # nothing downloaded again
    assert '(finished earlier: gather)' in proc.stdout and 'validation error: ' in proc.stdout, proc.stdout
    assert 'imgclf new: training (1/3)' in proc.stderr and 'gathering' not in proc.stderr, proc.stderr  # progress on stderr
    state = json.loads((tmp_path/'p'/'new.json').read_text())
    assert list(state['steps']) == ['gather', 'train', 'clean', 'retrain']
    assert (tmp_path/'p'/'model.safetensors').exists()


def test_bad_requests_are_refused_with_the_problem_named(tmp_path):
    "One class, a missing URL file, a folder that is not a project, a wrong --class: an error naming it, nothing of yours touched"
    from imgclf.new import new_classifier
    with pytest.raises(ImgclfError, match='at least two classes'): new_classifier(tmp_path/'p', {'daisy': 'daisy'})
    with pytest.raises(ImgclfError, match='missing.txt'):
        new_classifier(tmp_path/'p', {'a': tmp_path/'missing.txt', 'b': tmp_path/'missing2.txt'}, progress=False)
    with pytest.raises(ImgclfError, match='the project of the classes a, b, not a, c'):  # p was started for a and b
        new_classifier(tmp_path/'p', {'a': 'x', 'c': 'y'})
    mine = tmp_path/'mine'; mine.mkdir(); (mine/'notes.txt').write_text('mine')
    with pytest.raises(ImgclfError, match='not a project of imgclf new'): new_classifier(mine, {'a': 'x', 'b': 'y'})
    assert [f.name for f in mine.iterdir()] == ['notes.txt']
    proc = subprocess.run([sys.executable, '-m', 'imgclf.new', str(tmp_path/'q'), '--class', 'daisy', '--no-app'],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and proc.stderr.strip() == "imgclf new: --class expects NAME=SOURCE, got 'daisy'", proc.stderr
