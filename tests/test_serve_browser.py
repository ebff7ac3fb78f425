"""`imgclf serve`'s page as a visitor meets it: the real command on a port of 127.0.0.1 the system picks, driven by
Chromium through Playwright: photos dropped, pasted, chosen several at a time, taken with a (fake) camera, examples."""
import base64, os, re, shutil
from pathlib import Path
import pytest
from PIL import Image
from conftest import BIN, serving
from test_app import chromium_path, CHROMIUM_ARGS
from test_serve import model, with_examples  # noqa: F401 (fixtures: the demo model, trained once per session; a copy with examples)

# a camera that shows a test pattern, allowed without asking
CAMERA_ARGS = ['--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream']
MAX_MB = 2


@pytest.fixture(scope='module')
def served(with_examples, imgclf_home, tmp_path_factory):
    "`imgclf serve --port 0` with a 2 MiB limit on a model with example photos beside it; (URL, the model loaded)"
    from imgclf.model import load_model
    model = with_examples
    with serving([str(BIN/'imgclf'), 'serve', '--model', str(model), '--port', '0', '--max-mb', str(MAX_MB)], None,
                 tmp_path_factory.mktemp('serve_browser')/'serve.log',
                 {**os.environ, 'IMGCLF_HOME': str(imgclf_home), 'OMP_NUM_THREADS': '2'}) as url:
        yield url + '/', load_model(model)


@pytest.fixture(scope='module')
def browser():
    exe = chromium_path()
    if exe is None: pytest.skip('Chromium not found (looked at $CHROMIUM, /usr/bin/chromium and the PATH): apt-get install chromium')
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS + CAMERA_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, served):
    "A fresh page at 900 px, allowed to use the camera"
    ctx = browser.new_context(viewport=dict(width=900, height=900))
    ctx.grant_permissions(['camera'], origin=served[0].rstrip('/'))
    pg = ctx.new_page()
    pg.goto(served[0])
    yield pg
    ctx.close()


@pytest.fixture(scope='module')
def photos(imgclf_home, tmp_path_factory):
    "Three built-in photos of different classes, a text file named like a photo, and a file over the upload limit"
    from imgclf.core import image_files
    from imgclf.photos import flower_photos
    d = tmp_path_factory.mktemp('photos')
    out = {}
    for c, i in [('rose', 3), ('tulip', 4), ('sunflower', 5)]:
        out[c] = d/f'my {c} photo.jpg'
        shutil.copy(image_files(flower_photos()/c)[i], out[c])
    out['notes'] = d/'notes.jpg'; out['notes'].write_text('Shopping list: bread, milk, a better model.\n')
    out['huge'] = d/'huge.jpg'
    with open(out['huge'], 'wb') as f: f.write(b'\xff\xd8\xff' + os.urandom(MAX_MB * 2**20 + 1000))
    return out


def rows(page, n:int, timeout=120_000) -> list[dict]:
    "Wait for `n` rows with an answer each; each row's file name, answer, and {class: percentage} of its bars"
    page.wait_for_function(f"""() => {{ const a = [...document.querySelectorAll('#results .item .answer')];
        return a.length === {n} && a.every(e => e.textContent && !/^(Waiting|Classifying)/.test(e.textContent)); }}""",
                           timeout=timeout)
    return page.evaluate("""() => [...document.querySelectorAll('#results .item')].map(r => ({
        file: r.querySelector('.file').textContent, answer: r.querySelector('.answer').textContent,
        error: r.querySelector('.answer').classList.contains('error'),
        probs: Object.fromEntries([...r.querySelectorAll('.row')].map(x => [x.querySelector('.name').textContent,
                                                                             parseFloat(x.querySelector('.pct').textContent)])),
        bars: [...r.querySelectorAll('.row')].filter(x => x.offsetParent !== null).length}))""")


def check_answer(row:dict, p, threshold=0.6):
    "The row shows `p` (a `Prediction`) as the page words it: the class and its percentage, or not sure and the closest"
    assert not row['error'], row
    pct = 100 * p.probability
    if p.probability >= threshold:
        m = re.fullmatch(r'(.+) \((\d+\.\d)%\)', row['answer'])
        assert m and m[1] == p.label and abs(float(m[2]) - pct) <= 0.051, (row['answer'], p)
    else:
        assert row['answer'].startswith('Not sure: none of these?'), (row['answer'], p)
        m = re.search(r'The closest class is (.+), at (\d+\.\d)%', row['answer'])
        assert m and m[1] == p.label and abs(float(m[2]) - pct) <= 0.051, (row['answer'], p)
    assert list(row['probs']) == list(p.probs)
    assert all(abs(row['probs'][c] - 100 * v) <= 0.051 for c, v in p.probs.items()), (row['probs'], p.probs)


def send_files(page, files:list[Path], how:str):
    "Drop or paste `files` the way a browser delivers them: a `DataTransfer` holding `File`s made from their bytes"
    payload = [[f.name, base64.b64encode(f.read_bytes()).decode()] for f in files]
    page.evaluate("""([files, how]) => {
        const dt = new DataTransfer();
        for (const [name, b64] of files) dt.items.add(new File([Uint8Array.from(atob(b64), c => c.charCodeAt(0))], name, {type: 'image/jpeg'}));
        if (how === 'paste') { document.body.dispatchEvent(new ClipboardEvent('paste', {clipboardData: dt, bubbles: true, cancelable: true})); return; }
        const target = document.querySelector('h1');  // anywhere on the page, not only the box that says so
        for (const type of ['dragenter', 'dragover', 'drop'])
            target.dispatchEvent(new DragEvent(type, {dataTransfer: dt, bubbles: true, cancelable: true}));
    }""", [payload, how])


def choose(page, files:list[Path]):
    "What a visitor does: press the box and pick files in the dialog"
    with page.expect_file_chooser() as fc: page.locator('label.drop').click()
    assert fc.value.is_multiple()
    fc.value.set_files([str(f) for f in files])


def test_a_dropped_photo_is_classified(page, served, photos):
    send_files(page, [photos['rose']], 'drop')
    [row] = rows(page, 1)
    assert row['file'] == photos['rose'].name
    check_answer(row, served[1].predict(photos['rose']))
    assert row['bars'] == len(served[1].classes)  # one photo: a bar for every class


def test_two_dropped_photos_give_a_row_each(page, served, photos):
    send_files(page, [photos['tulip'], photos['sunflower']], 'drop')
    got = rows(page, 2)
    assert [r['file'] for r in got] == [photos['tulip'].name, photos['sunflower'].name]
    for r, f in zip(got, [photos['tulip'], photos['sunflower']]): check_answer(r, served[1].predict(f))


def test_a_pasted_photo_is_classified(page, served, photos):
    send_files(page, [photos['sunflower']], 'paste')
    [row] = rows(page, 1)
    assert re.fullmatch(r'pasted-\d\d-\d\d-\d\d\.jpg', row['file']), row
    check_answer(row, served[1].predict(photos['sunflower']))


def test_an_unsure_answer_says_none_of_these_and_names_the_closest_class(page, served, tmp_path):
    "A photo made of all five flowers at once: the model is not sure (below the page's 0.6)"
    import numpy as np
    from imgclf.core import image_files
    from imgclf.photos import flower_photos
    clf, blends = served[1], []
    for i in range(4):
        ims = [np.asarray(Image.open(image_files(flower_photos()/c)[i]).convert('RGB').resize((224, 224)), dtype=float) for c in clf.classes]
        blends.append(tmp_path/f'all five {i}.jpg')
        Image.fromarray(np.mean(ims, 0).astype('uint8')).save(blends[-1], quality=95)
    blend = min(blends, key=lambda f: clf.predict(f).probability)
    p = clf.predict(blend)
    assert p.probability < 0.6, f'the model is sure of every blend ({p}): this test needs a photo it is not sure of'
    send_files(page, [blend], 'drop')
    [row] = rows(page, 1)
    check_answer(row, p)
    assert 'below the 60% this page asks for' in row['answer']


def test_several_chosen_photos_give_a_row_each_and_bad_files_an_error_each(page, served, photos):
    files = [photos[k] for k in ['rose', 'notes', 'tulip', 'huge', 'sunflower']]
    choose(page, files)
    got = rows(page, len(files))
    assert [r['file'] for r in got] == [f.name for f in files]
    for r, f in zip(got, files):
        if f in (photos['notes'], photos['huge']): continue
        check_answer(r, served[1].predict(f))
        assert r['bars'] == 1  # several photos: the top class's bar only
    notes, huge = got[1], got[3]
    assert notes['error'] and 'notes.jpg' in notes['answer'] and 'not an image' in notes['answer'], notes
    assert huge['error'] and f'over {MAX_MB} MiB' in huge['answer'], huge


def test_more_photos_than_the_page_takes_are_left_out_with_a_message(page, served, photos):
    choose(page, [photos['rose']] * 14)
    got = rows(page, 12)
    assert all(not r['error'] for r in got)
    assert '2 of the 14 photos were left out' in page.locator('#message').inner_text()


def test_an_example_is_classified_as_the_model_classifies_its_file(page, served):
    from imgclf.modelfile import read_examples
    examples = read_examples(served[1].path)
    buttons = page.locator('#examples button')
    buttons.first.wait_for()
    assert page.locator('#examples').is_visible() and 'No photo at hand?' in page.locator('#examples').inner_text()
    assert buttons.count() == len(examples)
    for b, e in zip(buttons.all(), examples):
        assert e.label in b.get_attribute('title') and e.label in b.locator('img').get_attribute('alt')
        assert (e.licence in b.get_attribute('title')) and (e.author in b.get_attribute('title'))
    assert 'CC BY 2.0' in buttons.first.get_attribute('title') and 'A. Gardener' in buttons.first.get_attribute('title')
    buttons.nth(1).click()
    [row] = rows(page, 1)
    assert row['file'] == f'example {examples[1].path.name}'
    check_answer(row, served[1].predict(examples[1].path))


def test_the_camera_takes_a_photo_and_it_is_classified(page, served):
    page.locator('button.imgclf-camera').click()
    snap = page.locator('.imgclf-camera-view .imgclf-snap')
    snap.wait_for()
    page.wait_for_function("() => !document.querySelector('.imgclf-camera-view .imgclf-snap').disabled")
    snap.click()
    [row] = rows(page, 1)
    assert row['file'] == 'camera.jpg' and not row['error'], row
    assert re.fullmatch(r'.+ \(\d+\.\d%\)|Not sure: none of these\?.*', row['answer']), row
    shown = list(row['probs'].values())
    assert sorted(row['probs']) == sorted(served[1].classes) and shown == sorted(shown, reverse=True)  # most likely first
    assert abs(sum(shown) - 100) < 0.5 and row['bars'] == len(served[1].classes)


def test_a_phone_wide_page_does_not_scroll_sideways_and_its_buttons_are_big_enough(browser, served, photos, tmp_path):
    ctx = browser.new_context(viewport=dict(width=390, height=844), is_mobile=True, has_touch=True)
    ctx.grant_permissions(['camera'], origin=served[0].rstrip('/'))
    try:
        pg = ctx.new_page()
        pg.goto(served[0])
        pg.locator('#examples button').first.wait_for()
        long = tmp_path/('a-very-long-file-name-without-any-spaces-from-a-phone-camera-' * 2 + '.jpg')
        shutil.copy(photos['rose'], long)
        for files in ([long], [long, photos['tulip'], photos['notes']]):
            choose(pg, files)
            rows(pg, len(files))
            assert pg.evaluate('document.documentElement.scrollWidth') <= 390, 'the page scrolls sideways'
        for what in ['label.drop', 'button.imgclf-camera', '#examples button']:
            for box in [b.bounding_box() for b in pg.locator(what).all()]:
                assert box['width'] >= 44 and box['height'] >= 44, (what, box)
    finally: ctx.close()


def test_names_from_the_model_are_shown_as_text(browser, model, imgclf_home, tmp_path):
    "A model and class names that look like HTML are shown as they are, never run"
    from imgclf.model import load_model, save_model
    from safetensors.torch import load_file
    clf = load_model(model)
    meta = {**clf.meta, 'name': '<img src=x onerror="window.hacked=1">', 'classes': ['<img src=x onerror="window.hacked=2">'] + clf.classes[1:]}
    odd = save_model(load_file(model), meta, tmp_path/'odd.safetensors')
    with serving([str(BIN/'imgclf'), 'serve', '--model', str(odd), '--port', '0'], None, tmp_path/'serve.log',
                 {**os.environ, 'IMGCLF_HOME': str(imgclf_home), 'OMP_NUM_THREADS': '2'}) as url:
        pg = browser.new_page()
        try:
            pg.goto(url + '/')
            assert pg.locator('h1').inner_text() == meta['name'] and meta['classes'][0] in pg.locator('.muted').first.inner_text()
            assert pg.evaluate('window.hacked') is None
        finally: pg.close()
