"""The app as a visitor meets it: the real `imgclf app` command (Voila, preheated kernel, culling, large uploads) on a
free port of 127.0.0.1, driven by Chromium through Playwright."""
import os, re, time
from pathlib import Path
import numpy as np
import pytest
from PIL import Image
from conftest import BIN, start_and_read_port, stop
from test_app import chromium_path, CHROMIUM_ARGS, model_file, drop_files, paste_files

# seconds: short, so that the test of culling waits little, but long enough for a page on a busy 2-core machine to
# connect to the kernel it was handed before the culler looks (at 10 s the next visitor's kernel was once culled first)
CULL_AFTER = 30


@pytest.fixture(scope='module')
def model(request):
    "The model file `imgclf demo` wrote (or `$IMGCLF_TEST_MODEL`), and the model loaded from it"
    from imgclf.model import load_model
    path = model_file(request)
    return path, load_model(path)


def phone_photo(path:Path, up:Image.Image, target:int=20_000_000):
    """Write `up` as a phone would: a 24 MP JPEG (over `target` bytes) stored sideways with EXIF orientation 6, the way
    phones store portrait shots"""
    up = up.convert('RGB').resize((6000, 4000), Image.BICUBIC)
    noise = np.random.default_rng(0).normal(0, 24, (4000, 6000, 3)).astype(np.int16)  # sensor noise: a big file
    up = Image.fromarray((np.asarray(up, dtype=np.int16) + noise).clip(0, 255).astype(np.uint8))
    exif = Image.Exif(); exif[0x0112] = 6  # "turn me 90 degrees clockwise to view"
    up.transpose(Image.Transpose.ROTATE_90).save(path, 'JPEG', quality=98, exif=exif)
    assert path.stat().st_size >= target, path.stat().st_size


def orientation_matters(model) -> Image.Image:
    "A landscape crop of a built-in photo whose probabilities change most when it is seen sideways"
    from imgclf.core import image_files
    from imgclf.photos import flower_photos
    crops = [Image.open(f).convert('RGB').crop((0, 38, 227, 189)) for c in model.classes for f in image_files(flower_photos()/c)[:4]]
    gap = lambda im: max(abs(a - b) for a, b in zip(model.probs([im])[0], model.probs([im.transpose(Image.Transpose.ROTATE_90)])[0]))
    return max(crops, key=gap)


@pytest.fixture(scope='module')
def photos(imgclf_home, tmp_path_factory, model):
    "A rose, a temple, a 20 MB phone photo, a text file named like a photo, and a file over the upload limit"
    from imgclf.core import image_files
    from imgclf.photos import flower_photos
    from imgclf.app import MAX_UPLOAD
    from sklearn.datasets import load_sample_image
    d = tmp_path_factory.mktemp('photos')
    out = {n: d/n for n in ['rose.jpg', 'temple.jpg', 'phone.jpg', 'notes.jpg', 'huge.jpg']}
    Image.open(image_files(flower_photos()/'rose')[5]).save(out['rose.jpg'], quality=92)
    Image.fromarray(load_sample_image('china.jpg')).save(out['temple.jpg'], quality=92)
    phone_photo(out['phone.jpg'], orientation_matters(model[1]))
    out['notes.jpg'].write_text('Shopping list: bread, milk, a better model.\n')
    with open(out['huge.jpg'], 'wb') as f: f.write(b'\xff\xd8\xff' + os.urandom(MAX_UPLOAD + 1_000_000))
    return out


def kernels(proc) -> dict:
    "{kernel id: pid} of the kernels a Voila process runs"
    import psutil
    found = {}
    for c in psutil.Process(proc.pid).children(recursive=True):
        try: m = re.search(r'kernel-([0-9a-f-]{36})\.json', ' '.join(c.cmdline()))
        except psutil.Error: continue
        if m: found[m.group(1)] = c.pid
    return found


@pytest.fixture(scope='module')
def server(model, imgclf_home, tmp_path_factory):
    """`imgclf app` on a port the system picks (`--port 0`): it prints the URL with that port. Yields (url, process,
    port, log tail)"""
    tmp = tmp_path_factory.mktemp('app')
    env = {**os.environ, 'IMGCLF_HOME': str(imgclf_home), 'JUPYTER_CONFIG_DIR': str(tmp/'config'),
           'JUPYTER_DATA_DIR': str(tmp/'data'), 'JUPYTER_RUNTIME_DIR': str(tmp/'runtime'), 'IPYTHONDIR': str(tmp/'ipython'),
           'MPLCONFIGDIR': str(tmp/'mpl')}
    env.pop('IMGCLF_MAX_UPLOAD', None)
    logf = tmp/'app.log'
    proc, port = start_and_read_port([str(BIN/'imgclf'), 'app', '--model', str(model[0]), '--port', '0', '--no-browser',
                                      '--cull-after', str(CULL_AFTER)], env, logf, cwd=tmp)
    text = lambda: logf.read_text(errors='replace')
    try:
        deadline = time.time() + 300
        while 'running at' not in text():  # Voila's own line: its kernel is ready
            if proc.poll() is not None: pytest.fail(f'imgclf app exited with {proc.returncode}:\n{text()[-3000:]}')
            if time.time() > deadline: pytest.fail(f'imgclf app did not start within 300 s:\n{text()[-3000:]}')
            time.sleep(0.3)
        yield f'http://127.0.0.1:{port}/', proc, port, lambda n=3000: text()[-n:]
    finally:
        stop(proc)


@pytest.fixture(scope='module')
def browser():
    exe = chromium_path()
    if exe is None: pytest.skip('Chromium not found (looked at $CHROMIUM, /usr/bin/chromium and the PATH): apt-get install chromium')
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        yield b
        b.close()


def open_app(browser, url, width=1200, height=900):
    page = browser.new_page(viewport=dict(width=width, height=height))
    page.goto(url, timeout=300_000)
    page.locator('.imgclf-upload').wait_for(timeout=300_000)
    page.locator('.imgclf-row').first.wait_for(timeout=60_000)
    return page


def upload(page, path:Path):
    "What a visitor does: press the button and pick a file"
    with page.expect_file_chooser() as fc: page.locator('.imgclf-upload').click()
    fc.value.set_files(str(path))


def classify(page, path:Path) -> str:
    "Upload `path` and wait for the answer (one step: no other button to press); the text of the results"
    page.evaluate("document.querySelectorAll('.imgclf-answer').forEach(e => e.remove())")  # never read an old answer
    upload(page, path)
    page.locator('.imgclf-answer').wait_for(timeout=180_000)
    return page.locator('.imgclf-results').inner_text()


def shown_probs(page) -> dict:
    "{class: percentage} as the rows show them, and in their order"
    names = page.locator('.imgclf-row .imgclf-name').all_inner_texts()
    pcts = page.locator('.imgclf-row .imgclf-pct').all_inner_texts()
    return {n: float(p.rstrip('%')) for n, p in zip(names, pcts)}


def expected(model, path, size=640):
    "The model's probabilities for the upright picture in `path`, read as the app reads it"
    from imgclf.images import open_image
    return model.predict(open_image(path.read_bytes(), size=size))


def test_prints_the_url_it_serves(server):
    url, proc, port, logtail = server
    assert logtail(10**9).startswith('Serving the app with ') and f' at {url}  (Ctrl-C to stop)\n' in logtail(10**9), logtail()
    assert port != 0 and f'running at:\n{url}' in logtail(), logtail()  # Voila's own line: the same URL


def test_classifies_on_upload(server, browser, model, photos):
    url, proc, port, logtail = server
    classes = model[1].classes
    page = open_app(browser, url)
    assert page.title() == f'{model[1].name}: what is in your photo?'
    assert page.get_by_role('button', name=re.compile('Classify')).count() == 0
    assert page.locator('.imgclf-row .imgclf-name').all_inner_texts() == classes  # listed before any upload
    for name in ['rose.jpg', 'temple.jpg']:
        text = classify(page, photos[name])
        p = expected(model[1], photos[name])
        answer = p.label if p.probability >= 0.6 else 'Not sure: none of these?'
        assert page.locator('.imgclf-answer').inner_text().startswith(answer), text
        probs = shown_probs(page)
        assert list(probs) == list(p.probs), probs  # every class, most likely first
        for c in classes: assert probs[c] == pytest.approx(100 * p.probs[c], abs=0.051), (c, probs)
        assert page.locator('.imgclf-preview img').evaluate('i => i.naturalWidth') > 0
        assert page.locator('.imgclf-message').inner_text() == '' and page.locator('.imgclf-error').count() == 0  # no apology
    page.close()


def test_phone_photo_of_20_mb_classifies_upright(server, browser, model, photos):
    url, proc, port, logtail = server
    path = photos['phone.jpg']
    assert path.stat().st_size > 20_000_000 and Image.open(path).size == (4000, 6000)  # stored sideways, portrait
    page = open_app(browser, url)
    classify(page, path)
    w, h = page.locator('.imgclf-preview img').evaluate('i => [i.naturalWidth, i.naturalHeight]')
    assert w > h, (w, h)  # shown upright: the landscape the photo shows
    probs, p = shown_probs(page), expected(model[1], path)
    for c in model[1].classes: assert probs[c] == pytest.approx(100 * p.probs[c], abs=0.051), (c, probs)
    from imgclf.images import open_image
    sideways = model[1].predict(open_image(path.read_bytes(), size=640).transpose(Image.Transpose.ROTATE_90))  # as stored
    assert max(abs(100 * sideways.probs[c] - probs[c]) for c in probs) > 1, (sideways, probs)  # the test tells them apart
    assert 'Connection lost' not in page.inner_text('body')
    page.close()


def test_too_big_gets_a_message_and_the_page_keeps_working(server, browser, model, photos):
    url, proc, port, logtail = server
    page = open_app(browser, url)
    upload(page, photos['huge.jpg'])
    msg = page.locator('.imgclf-note')  # the browser's own news: the file is never sent
    page.wait_for_function("() => document.querySelector('.imgclf-note').innerText.includes('huge.jpg is')", timeout=30_000)
    assert re.search(r'huge\.jpg is 5\d MB: this app takes photos of up to 50 MB', msg.inner_text()), msg.inner_text()
    classify(page, photos['rose.jpg'])  # the connection survived
    assert 'huge.jpg' not in msg.inner_text()
    page.close()


def answer_rows(page, n:int) -> list[tuple[str, str]]:
    "Wait for `n` rows of several photos; (name, answer) of each"
    page.wait_for_function(f"() => document.querySelectorAll('.imgclf-photo').length === {n}", timeout=180_000)
    return list(zip(page.locator('.imgclf-photo .imgclf-name').all_inner_texts(),
                    page.locator('.imgclf-photo .imgclf-photo-answer').all_inner_texts()))


def said(model, path, threshold=0.6) -> str:
    "How a row begins for the photo in `path`, as the model answers in Python"
    p = expected(model, path)
    return p.label if p.probability >= threshold else 'Not sure: none of these?'


def test_several_photos_get_a_row_each(server, browser, model, photos):
    url, proc, port, logtail = server
    page = open_app(browser, url)
    with page.expect_file_chooser() as fc: page.locator('.imgclf-upload').click()
    fc.value.set_files([str(photos[n]) for n in ['rose.jpg', 'notes.jpg', 'temple.jpg']])
    rows = answer_rows(page, 3)
    assert [n for n, _ in rows] == ['rose.jpg', 'notes.jpg', 'temple.jpg'], rows
    assert rows[0][1].startswith(said(model[1], photos['rose.jpg'])) and rows[2][1].startswith(said(model[1], photos['temple.jpg'])), rows
    assert rows[1][1].startswith('notes.jpg is not a photo this app can read'), rows
    assert page.locator('.imgclf-photo img').count() == 2 and page.locator('.imgclf-preview img').count() == 0
    page.close()


def test_drop_anywhere_and_paste(server, browser, model, photos):
    url, proc, port, logtail = server
    page = open_app(browser, url)
    drop_files(page, [photos['rose.jpg']], '.imgclf-results')  # on the page, not on a button
    page.locator('.imgclf-answer').wait_for(timeout=180_000)
    assert page.locator('.imgclf-preview img').get_attribute('alt') == 'rose.jpg'
    assert page.locator('.imgclf-answer').inner_text().startswith(said(model[1], photos['rose.jpg']))
    drop_files(page, [photos['temple.jpg'], photos['rose.jpg']])
    assert [n for n, _ in answer_rows(page, 2)] == ['temple.jpg', 'rose.jpg']
    page.evaluate("document.querySelectorAll('.imgclf-answer').forEach(e => e.remove())")
    paste_files(page, [photos['temple.jpg']])
    page.locator('.imgclf-answer').wait_for(timeout=180_000)
    assert re.fullmatch(r'pasted-\d\d-\d\d-\d\d\.jpg', page.locator('.imgclf-preview img').get_attribute('alt'))
    assert page.locator('.imgclf-answer').inner_text().startswith(said(model[1], photos['temple.jpg']))
    assert page.locator('.imgclf-error').count() == 0
    page.close()


def test_drop_of_too_many_or_too_much_leaves_some_out(server, browser, model, photos):
    url, proc, port, logtail = server
    page = open_app(browser, url)
    drop_files(page, [photos['huge.jpg'], photos['rose.jpg']])
    page.locator('.imgclf-answer').wait_for(timeout=180_000)  # the rose alone was sent
    assert re.search(r'huge\.jpg is 5\d MB: this app takes photos of up to 50 MB', page.locator('.imgclf-note').inner_text())
    drop_files(page, [photos['rose.jpg']] * 13)
    rows = answer_rows(page, 12)
    assert 'this app takes 12 photos at a time' in page.locator('.imgclf-note').inner_text(), page.locator('.imgclf-note').inner_text()
    assert all(a.startswith(said(model[1], photos['rose.jpg'])) for _, a in rows), rows
    page.close()


def test_example_photos(server, browser, model):
    from imgclf.modelfile import read_examples, examples_folder
    url, proc, port, logtail = server
    examples = read_examples(model[0])
    assert examples, f'no example photos beside {model[0]}'
    page = open_app(browser, url, width=390, height=800)
    buttons = page.locator('.imgclf-example')
    assert 0 < buttons.count() <= 6
    assert page.evaluate('document.documentElement.scrollWidth') <= 390
    buttons.first.click()
    page.locator('.imgclf-answer').wait_for(timeout=180_000)
    name = page.locator('.imgclf-preview img').get_attribute('alt').removeprefix('example ')
    path = examples_folder(model[0])/name
    assert path.is_file() and page.locator('.imgclf-answer').inner_text().startswith(said(model[1], path))
    probs, p = shown_probs(page), expected(model[1], path)  # that very photo, not another of its class
    for c in model[1].classes: assert probs[c] == pytest.approx(100 * p.probs[c], abs=0.051), (c, probs, p)
    e = next(e for e in examples if e.path.name == name)
    assert e.licence and e.licence in page.locator('.imgclf-credit').inner_text()
    page.close()


def test_camera(server, browser, model):
    url, proc, port, logtail = server
    context = browser.new_context(viewport=dict(width=1200, height=900), permissions=['camera'])
    page = context.new_page()
    page.goto(url, timeout=300_000); page.locator('.imgclf-row').first.wait_for(timeout=300_000)
    page.locator('.imgclf-camera').click()
    page.locator('.imgclf-camera-view video').wait_for(timeout=30_000)
    page.locator('.imgclf-snap:enabled').click(timeout=30_000)
    page.locator('.imgclf-answer').wait_for(timeout=180_000)
    assert page.locator('.imgclf-camera-view').count() == 0  # the view closed, the camera stopped
    assert page.locator('.imgclf-preview img').get_attribute('alt') == 'camera.jpg'
    assert page.locator('.imgclf-row .imgclf-pct').count() == len(model[1].classes)
    context.close()


def test_non_image_gets_a_friendly_message(server, browser, model, photos):
    url, proc, port, logtail = server
    page = open_app(browser, url)
    upload(page, photos['notes.jpg'])
    page.get_by_text('notes.jpg is not a photo this app can read').wait_for(timeout=120_000)
    body = page.inner_text('body')
    assert 'Please choose a JPEG, PNG or WebP photo' in body
    for leak in ['Error', 'Traceback', 'Exception', str(photos['notes.jpg'].parent), '/tmp', 'site-packages']: assert leak not in body
    assert page.locator('.imgclf-answer').count() == 0
    classify(page, photos['rose.jpg'])
    assert 'not a photo' not in page.inner_text('body')
    page.close()


def test_phone_screen_shows_every_percentage(server, browser, model, photos, tmp_path):
    url, proc, port, logtail = server
    page = open_app(browser, url, width=390, height=700)
    classify(page, photos['rose.jpg'])
    page.screenshot(path=str(tmp_path/'app-390.png'), full_page=True)
    assert page.evaluate('document.documentElement.scrollWidth') <= 390  # nothing wider than the phone
    pcts = page.locator('.imgclf-row .imgclf-pct')
    assert pcts.count() == len(model[1].classes)
    for i in range(pcts.count()):
        el = pcts.nth(i)
        assert re.fullmatch(r'\d{1,3}\.\d%', el.inner_text()), el.inner_text()  # "100.0%", not "100"
        clip = el.evaluate('e => [e.scrollWidth, e.clientWidth, e.getBoundingClientRect().right]')
        assert clip[0] <= clip[1] and clip[2] <= 390, clip
    button = page.locator('.imgclf-upload')
    assert button.get_attribute('title') == 'Choose one or more photos to classify'
    assert button.evaluate("b => [getComputedStyle(b).fontSize, getComputedStyle(b, '::after').content]") == ['0px', '"Choose photos"']
    for sel in ['.imgclf-upload', '.imgclf-camera', '.imgclf-example']:  # big enough for a finger
        box = page.locator(sel).first.bounding_box()
        assert box['height'] >= 44 and box['x'] >= 0 and box['x'] + box['width'] <= 390, (sel, box)
    last = page.locator('.imgclf-row').last  # the page scrolls: the last class can be reached with the wheel
    page.mouse.move(195, 350)
    for _ in range(10): page.mouse.wheel(0, 400)
    page.wait_for_function("() => { const r = [...document.querySelectorAll('.imgclf-row')].pop().getBoundingClientRect();"
                           " return r.top >= 0 && r.bottom <= innerHeight; }", timeout=30_000)  # scrolled into view
    box = last.bounding_box()
    assert box and 0 <= box['y'] and box['y'] + box['height'] <= 700, box
    page.close()


def test_closed_tab_kernel_is_culled(server, browser, model, photos):
    url, proc, port, logtail = server
    page = open_app(browser, url)
    kid = page.evaluate("JSON.parse(document.getElementById('jupyter-config-data').textContent).kernelId")
    classify(page, photos['rose.jpg'])
    assert kid in kernels(proc), (kid, kernels(proc))
    page.close()
    deadline = time.time() + 20 * CULL_AFTER
    while kid in kernels(proc) and time.time() < deadline: time.sleep(1)
    assert kid not in kernels(proc), f'kernel {kid} still running {20 * CULL_AFTER} s after its page closed:\n{logtail()}'
    assert kernels(proc), 'the preheated kernel waiting for the next visitor was culled too'
    page = open_app(browser, url)  # and the next visitor is served
    classify(page, photos['rose.jpg'])
    page.close()


def test_kernel_handed_over_after_a_quiet_while_waits_for_the_page(server, browser, model, photos):
    """The kernel waiting in the pool has been idle longer than the culling timeout when a visitor arrives, and the
    visitor's page is slow to connect to it (a phone, a busy server): it must not be culled in between"""
    url, proc, port, logtail = server
    time.sleep(CULL_AFTER + 5)  # nobody comes for a while: the preheated kernel sits idle
    page = browser.new_page(viewport=dict(width=1200, height=900))
    interval = max(1, min(30, CULL_AFTER // 3))  # how often the culler looks, as `voila_command` sets it

    def late(ws):  # the page's connection to its kernel arrives after the culler has looked at least once
        time.sleep(interval + 4)
        ws.connect_to_server()
    page.route_web_socket(re.compile(r'/api/kernels/[0-9a-f-]+/channels'), late)
    page.goto(url, timeout=300_000)
    try: page.locator('.imgclf-upload').wait_for(timeout=120_000)
    except Exception as e: raise AssertionError(f'the page never got its kernel:\n{logtail()}') from e
    kid = page.evaluate("JSON.parse(document.getElementById('jupyter-config-data').textContent).kernelId")
    assert not [l for l in logtail().splitlines() if 'Culling' in l and kid in l], logtail()
    classify(page, photos['rose.jpg'])
    page.close()


def test_reloads_and_closing_stop_the_old_kernels_at_once(server, browser, model):
    """Reloading the page five times, then closing it: each old page's kernel is stopped by the request the page sends
    as it goes, not culled later; what runs is one kernel per open page and the one preheated for the next visitor"""
    url, proc, port, logtail = server
    page = browser.new_context(viewport=dict(width=1200, height=900)).new_page()  # a tab of a browser that stays open
    page.goto(url, timeout=300_000); page.locator('.imgclf-upload').wait_for(timeout=300_000)
    kid = lambda: page.evaluate("JSON.parse(document.getElementById('jupyter-config-data').textContent).kernelId")
    kids, waits = [kid()], []

    def until(ok, what):
        deadline = time.time() + 120
        while not ok():
            assert time.time() < deadline, f'{what}: kernels {kernels(proc)}\n{logtail()}'
            time.sleep(0.1)
    for _ in range(5):
        t = time.time()
        page.reload(wait_until='commit')
        until(lambda: kids[-1] not in kernels(proc), f'kernel {kids[-1]} still runs 120 s after its page was reloaded')
        waits.append(time.time() - t)
        page.locator('.imgclf-upload').wait_for(timeout=300_000)
        kids.append(kid())
        until(lambda: kids[-1] in kernels(proc) and len(kernels(proc)) == 2, 'not the open page\'s kernel and the pool\'s')
    t = time.time()
    page.close(run_before_unload=True)
    until(lambda: kids[-1] not in kernels(proc) and len(kernels(proc)) == 1, 'not only the pool\'s kernel after the page closed')
    waits.append(time.time() - t)
    print('\nimgclf app: seconds from each of 5 reloads and a close until the page\'s old kernel was gone: '
          + ', '.join(f'{w:.1f}' for w in waits))
    assert len(set(kids)) == 6
    log = logtail(10**9)
    assert not [l for l in log.splitlines() if 'Culling' in l and any(k in l for k in kids)], log[-3000:]
    assert '_xsrf' not in log, log[-3000:]  # no shutdown request refused
