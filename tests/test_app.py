"The app as a visitor meets it: `voila nbs/07_app.ipynb` on a free port, driven by Chromium through Playwright."
import os, re, shutil, signal, subprocess, time, urllib.request
from pathlib import Path
import pytest
from PIL import Image
from conftest import BIN, free_port

NB = Path(__file__).resolve().parent.parent/'nbs'/'07_app.ipynb'
CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
                 '--disable-sync', '--no-first-run']


def chromium_path():
    "Chromium from $CHROMIUM, else the Debian package's /usr/bin/chromium, else the PATH"
    for c in [os.environ.get('CHROMIUM'), '/usr/bin/chromium', shutil.which('chromium'), shutil.which('chromium-browser')]:
        if c and Path(c).is_file(): return c
    return None


@pytest.fixture(scope='module')
def model(demo_run):
    """The model `imgclf demo` exported (or the one `$IMGCLF_TEST_MODEL` names, to check the app with a model of
    your own); and the learner loaded from it"""
    from imgclf.export import load_classifier
    proc, out = demo_run
    path = Path(os.environ.get('IMGCLF_TEST_MODEL') or out/'model.pkl')
    assert path.is_file(), proc.stderr[-2000:]
    return path, load_classifier(path)


@pytest.fixture(scope='module')
def photos(imgclf_home, tmp_path_factory):
    "A real rose and a real photo of no flower (a temple) as JPEG files, and a text file named like a photo"
    from imgclf.core import image_files
    from imgclf.photos import flower_photos
    from sklearn.datasets import load_sample_image
    d = tmp_path_factory.mktemp('photos')
    out = {'rose.jpg': d/'rose.jpg', 'temple.jpg': d/'temple.jpg'}
    Image.open(image_files(flower_photos()/'rose')[5]).save(out['rose.jpg'], quality=92)
    Image.fromarray(load_sample_image('china.jpg')).save(out['temple.jpg'], quality=92)
    (d/'notes.jpg').write_text('Shopping list: bread, milk, a better model.\n')
    out['notes.jpg'] = d/'notes.jpg'
    return out


def start_voila(env, tmp, attempt):
    "Start voila on a free port; (process, url, log file) once it listens there, or None if the port was taken"
    port, logf = free_port(), tmp/f'voila-{attempt}.log'
    with open(logf, 'wb') as log:
        # port_retries=0: if another process took the port meanwhile, fail instead of silently serving elsewhere
        proc = subprocess.Popen([str(BIN/'voila'), str(NB), '--no-browser', f'--port={port}', '--Voila.ip=127.0.0.1',
                                 '--Voila.port_retries=0', '--show_tracebacks=False'],
                                cwd=tmp, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url, deadline = f'http://127.0.0.1:{port}/', time.time() + 120
    while f'running at:\n{url}' not in logf.read_text(errors='replace'):
        if proc.poll() is not None:
            if 'already in use' in logf.read_text(errors='replace'): return None
            pytest.fail(f'voila exited with {proc.returncode}:\n{logf.read_text(errors="replace")[-3000:]}')
        if time.time() > deadline:
            stop(proc); pytest.fail(f'voila did not start within 120 s:\n{logf.read_text(errors="replace")[-3000:]}')
        time.sleep(0.3)
    return proc, url, logf


def stop(proc):
    "Stop voila (SIGTERM lets it shut down the kernels it started), then make sure its process group is gone"
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try: proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL); proc.wait(5)


@pytest.fixture(scope='module')
def server(model, imgclf_home, tmp_path_factory):
    "A real Voila process serving the app notebook on 127.0.0.1; its URL, and a function giving its log's tail"
    tmp = tmp_path_factory.mktemp('voila')
    env = {**os.environ, 'IMGCLF_MODEL': str(model[0]), 'IMGCLF_HOME': str(imgclf_home),
           # keep Jupyter's and IPython's per-user files out of the home folder
           'JUPYTER_CONFIG_DIR': str(tmp/'config'), 'JUPYTER_DATA_DIR': str(tmp/'data'),
           'JUPYTER_RUNTIME_DIR': str(tmp/'runtime'), 'IPYTHONDIR': str(tmp/'ipython'), 'MPLCONFIGDIR': str(tmp/'mpl')}
    for attempt in range(3):
        started = start_voila(env, tmp, attempt)
        if started: break
    else: pytest.fail('three free ports in a row were taken before voila could listen on them')
    proc, url, logf = started
    try: yield url, lambda: logf.read_text(errors='replace')[-3000:]
    finally: stop(proc)


@pytest.fixture(scope='module')
def browser():
    exe = chromium_path()
    if exe is None:
        pytest.skip('Chromium not found (looked at $CHROMIUM, /usr/bin/chromium and the PATH): '
                    'install it with `apt-get install chromium`')
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        yield b
        b.close()


def visible_text(html:str) -> str:
    "The text a visitor can read in an HTML page: no scripts, styles or tags"
    html = re.sub(r'(?is)<(script|style)\b.*?</\1>', ' ', html)
    return re.sub(r'\s+', ' ', re.sub(r'<[^>]+>', ' ', html))


def test_page_renders_without_code(server):
    url, logtail = server
    with urllib.request.urlopen(url, timeout=180) as r:
        assert r.status == 200
        page = r.read().decode()
    text = visible_text(page)
    assert 'What is in your photo?' in text, logtail()
    assert 'application/vnd.jupyter.widget-view+json' in page  # the app widget was displayed
    for code in ['load_app', 'import os', 'IMGCLF_MODEL', 'IN_TEST']: assert code not in text
    for err in ['Traceback', 'Error', 'There was an error when executing']: assert err not in text


def open_app(browser, url):
    page = browser.new_page()
    page.goto(url, timeout=180_000)
    page.get_by_role('button', name='Classify').wait_for(timeout=180_000)
    return page


def upload(page, path):
    "What a visitor does: press Upload and pick a file"
    with page.expect_file_chooser() as fc: page.get_by_role('button', name=re.compile('Upload')).click()
    fc.value.set_files(str(path))


def shown_probs(page, vocab) -> dict:
    "The percentage shown beside each class's bar"
    lines = [l.strip() for l in page.inner_text('body').splitlines() if l.strip()]
    return {c: float(lines[lines.index(c) + 1].rstrip('%')) for c in vocab}


def classify(page, path):
    upload(page, path)
    # a new upload clears the previous answer: wait for that, so the old answer is never read as the new one
    page.get_by_text('Prediction:').wait_for(state='detached', timeout=120_000)
    page.get_by_role('button', name='Classify').click()
    page.get_by_text('Prediction:').wait_for(timeout=120_000)
    return page.inner_text('body')


def expected_answer(learn, path) -> tuple:
    "The prediction for `path`, and the answer the app must show for it: the class, or 'none of these?' when unsure"
    from imgclf.app import ClassifierApp
    from imgclf.export import predict_image
    p = predict_image(learn, path)
    return p, (f'Prediction: {p.label}' if p.probability >= ClassifierApp(learn).threshold else 'Prediction: none of these?')


def test_classifies_a_photo(server, browser, model, photos):
    url, logtail = server
    learn = model[1]
    vocab = list(learn.dls.vocab)
    page = open_app(browser, url)
    body = page.inner_text('body')
    assert all(c in body for c in vocab)  # the classes are listed before any upload
    for name in ['rose.jpg', 'temple.jpg']:
        body = classify(page, photos[name])
        expected, answer = expected_answer(learn, photos[name])
        assert answer in body, body
        probs = shown_probs(page, vocab)
        assert sum(probs.values()) == pytest.approx(100, abs=0.1 * len(vocab)), probs
        for c in vocab: assert probs[c] == pytest.approx(100 * expected.probs[c], abs=0.051), (c, probs)
        assert page.locator('img').count() >= 1 and page.locator('img').first.evaluate('i => i.naturalWidth') > 0
    assert 'Traceback' not in page.inner_text('body')
    page.close()


def test_bad_upload_gets_a_message_and_the_app_keeps_working(server, browser, model, photos):
    url, logtail = server
    vocab = list(model[1].dls.vocab)
    page = open_app(browser, url)
    upload(page, photos['notes.jpg'])
    msg = page.get_by_text('notes.jpg is not an image that can be read')
    msg.wait_for(timeout=120_000)
    body = page.inner_text('body')
    assert 'Please upload a photo' in body and 'Traceback' not in body and 'Prediction:' not in body
    assert page.get_by_role('button', name='Classify').is_disabled()
    body = classify(page, photos['rose.jpg'])
    assert 'not an image' not in body  # the message is gone once a photo is classified
    assert sum(shown_probs(page, vocab).values()) == pytest.approx(100, abs=0.1 * len(vocab))
    page.close()


def test_same_photo_same_answer(model, photos):
    "Classifying one photo twice gives the same probabilities: no random augmentation at prediction time"
    from imgclf.app import ClassifierApp
    app = ClassifierApp(model[1])
    app.load(photos['rose.jpg'].read_bytes(), 'rose.jpg')
    runs = [app.classify().probs for _ in range(4)]
    assert all(r == runs[0] for r in runs), f'the same photo got different answers: {runs}'


def test_unsure_answer_names_the_closest_class(model, photos):
    "Below the threshold the app says the photo may show none of its classes, and names the closest one as a guess"
    from imgclf.app import ClassifierApp
    learn = model[1]
    for threshold in (0.0, 1.01):
        app = ClassifierApp(learn, threshold=threshold)
        app.load(photos['temple.jpg'].read_bytes(), 'temple.jpg')
        p = app.classify()
        if threshold == 0.0: assert f'Prediction: <b>{p.label}</b>' in app.answer.value
        else:
            assert 'none of these?' in app.answer.value and f'closest class is {p.label}' in app.answer.value
            assert f'{p.probability:.1%}' in app.answer.value
