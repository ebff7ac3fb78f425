"`imgclf serve` as a client meets it: the real command on a free port of 127.0.0.1, real photos, bad uploads."
import io, http.client, os, subprocess, sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import httpx
import pytest
from PIL import Image
from conftest import BIN, serving


@pytest.fixture(scope='module')
def model(imgclf_home):
    "The demo model in the safe format (trained on the built-in photos the first time)"
    from imgclf.export import demo_model
    return demo_model()


@pytest.fixture(scope='module')
def server(model, imgclf_home, tmp_path_factory):
    "`imgclf serve` with a 2 MiB upload limit on a port the system picks; its base URL; stopped afterwards"
    with serving([str(BIN/'imgclf'), 'serve', '--model', str(model), '--port', '0', '--max-mb', '2'], None,
                 tmp_path_factory.mktemp('serve')/'serve.log', {**os.environ, 'IMGCLF_HOME': str(imgclf_home), 'OMP_NUM_THREADS': '2'}) as url:
        yield url


def post(url, data:bytes, name='photo.jpg', timeout=60):
    return httpx.post(url + '/predict', files={'file': (name, data, 'application/octet-stream')}, timeout=timeout)


def test_predictions_equal_the_classifiers(server, model, imgclf_home):
    from imgclf.model import load_model
    from imgclf.core import image_files
    clf = load_model(model)
    photos = [image_files(Path(imgclf_home)/'flowers'/c)[i] for c in clf.classes for i in (0, 7)]
    with ThreadPoolExecutor(8) as ex:  # eight clients at once: answered in batches, each answer its own
        answers = list(ex.map(lambda f: post(server, f.read_bytes(), f.name), photos))
    for f, r in zip(photos, answers):
        assert r.status_code == 200, r.text
        j, want = r.json(), clf.predict(f)
        assert j['label'] == want.label and list(j['probs']) == list(want.probs)
        # a batch rounds floats in another order than one image alone: equal within the learner-equality bound
        assert abs(j['probability'] - want.probability) < 1e-5
        assert max(abs(j['probs'][c] - want.probs[c]) for c in clf.classes) < 1e-5
    assert sum(r.json()['label'] == f.parent.name for f, r in zip(photos, answers)) >= 7


def test_health_and_page(server, model):
    from imgclf.model import load_model
    clf = load_model(model)
    h = httpx.get(server + '/health').json()
    assert h == {'status': 'ok', 'model': clf.name, 'classes': clf.classes}
    page = httpx.get(server + '/')
    assert page.status_code == 200 and f'<title>{clf.name}</title>' in page.text
    assert 'name="viewport"' in page.text and 'type="file"' in page.text


def test_too_large_is_413_whether_announced_or_not(server):
    big = b'\xff\xd8' + os.urandom(3 * 2**20)
    r = post(server, big)
    assert r.status_code == 413 and 'larger than 2 MiB' in r.json()['error']
    # a client that announces a small body and sends a large one (chunked, no Content-Length): cut off while streaming
    def chunks():
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.jpg"\r\n\r\n'
        for _ in range(40): yield b'\xff' * 2**17
        yield b'\r\n--b--\r\n'
    r = httpx.post(server + '/predict', content=chunks(), headers={'content-type': 'multipart/form-data; boundary=b'}, timeout=60)
    assert r.status_code == 413
    host, port = server.removeprefix('http://').split(':')
    c = http.client.HTTPConnection(host, int(port), timeout=30)
    c.putrequest('POST', '/predict'); c.putheader('Content-Type', 'multipart/form-data; boundary=b')
    c.putheader('Content-Length', str(50 * 2**20)); c.endheaders()  # announced too large: refused before the body
    assert c.getresponse().status == 413


@pytest.mark.parametrize('name,data,message', [
    ('notes.jpg', b'Shopping list: bread, milk.', 'not an image'),
    ('page.jpg', b'<!doctype html><html><body>404</body></html>', 'HTML page'),
    ('empty.jpg', b'', 'empty'),
])
def test_not_a_photo_is_422_with_a_clear_message(server, name, data, message):
    r = post(server, data, name)
    assert r.status_code == 422 and message in r.json()['error'] and 'Traceback' not in r.text


def test_broken_photo_and_bad_requests_are_422(server, imgclf_home):
    from imgclf.core import image_files
    good = image_files(Path(imgclf_home)/'flowers'/'daisy')[0].read_bytes()
    r = post(server, good[:len(good)//3], 'cut.jpg')
    assert r.status_code == 422 and 'cut.jpg' in r.json()['error'] and 'broken image' in r.json()['error'], r.text  # a cut-off JPEG is refused, never half-classified
    r = post(server, b'\xff\xd8\xff\xe0' + b'\x00' * 500, 'zeros.jpg')
    assert r.status_code == 422 and 'zeros.jpg' in r.json()['error']
    r = httpx.post(server + '/predict', data={'other': 'x'})
    assert r.status_code == 422
    r = httpx.post(server + '/predict', files={'photo': ('a.jpg', good)})
    assert r.status_code == 422 and 'field named "file"' in r.json()['error']
    r = httpx.post(server + '/predict', content=b'--nope', headers={'content-type': 'multipart/form-data; boundary=b'})
    assert r.status_code == 422 and r.json()['error'].startswith('The upload could not be read'), r.text
    assert httpx.get(server + '/health').status_code == 200  # still serving


def test_a_sideways_phone_photo_gets_the_upright_answer(server, imgclf_home):
    from imgclf.core import image_files
    im = Image.open(image_files(Path(imgclf_home)/'flowers'/'sunflower')[2]).convert('RGB').resize((300, 200))
    up, side = io.BytesIO(), io.BytesIO()
    im.save(up, 'PNG')
    exif = Image.Exif(); exif[0x0112] = 6
    im.transpose(Image.Transpose.ROTATE_90).save(side, 'PNG', exif=exif)
    a, b = post(server, up.getvalue(), 'up.png').json(), post(server, side.getvalue(), 'side.png').json()
    assert a['label'] == b['label'] and abs(a['probability'] - b['probability']) < 1e-6


def test_serve_needs_only_its_own_requirements(model, imgclf_home, tmp_path):
    "As the Docker image installs it: nothing importable but settings.ini's serve_requirements (no fastai, Jupyter, pandas...)"
    script = Path(__file__).parent/'fixtures'/'serve_only.py'
    with serving([sys.executable, str(script), 'serve', '--model', str(model), '--port', '0'], None, tmp_path/'serve.log',
                 {**os.environ, 'IMGCLF_HOME': str(imgclf_home), 'OMP_NUM_THREADS': '2'}) as url:
        from imgclf.core import image_files
        photo = image_files(Path(imgclf_home)/'flowers'/'rose')[0]
        r = post(url, photo.read_bytes(), photo.name)
        assert r.status_code == 200 and set(r.json()['probs']) == set(httpx.get(url + '/health').json()['classes'])


def test_serve_only_refuses_what_serving_does_not_install(tmp_path):
    "The check above can fail: under it, importing fastai (not in serve_requirements) is refused"
    script = Path(__file__).parent/'fixtures'/'serve_only.py'
    ok = subprocess.run([sys.executable, str(script), '--import', 'starlette'], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    r = subprocess.run([sys.executable, str(script), '--import', 'fastai'], capture_output=True, text=True)
    assert r.returncode != 0 and "No module named 'fastai'" in r.stderr


def test_serve_without_a_model_serves_the_demo_model(model, tmp_path):
    "`imgclf serve` with no --model serves the demo model (here already trained, in a fresh IMGCLF_HOME)"
    from imgclf.model import load_model
    home = tmp_path/'home'; (home/'models').mkdir(parents=True)
    demo = home/'models'/'flowers.safetensors'
    demo.write_bytes(model.read_bytes())
    env = {k: v for k, v in os.environ.items() if k != 'IMGCLF_MODEL'}
    with serving([str(BIN/'imgclf'), 'serve', '--port', '0'], None, tmp_path/'serve.log',
                 {**env, 'IMGCLF_HOME': str(home), 'OMP_NUM_THREADS': '2'}) as url:
        clf, port = load_model(demo), url.rsplit(':', 1)[1]
        assert httpx.get(url + '/health').json() == {'status': 'ok', 'model': 'flowers', 'classes': clf.classes}
    assert f'Serving flowers ({", ".join(clf.classes)}) at http://127.0.0.1:{port}' in (tmp_path/'serve.log').read_text()


@pytest.fixture(scope='module')
def with_examples(model, tmp_path_factory):
    """A copy of the demo model with an example photo of each class beside it (the first with its licence, author and
    page), and rows in its list that name files outside the folder, a hidden file and one that is missing"""
    from imgclf.model import load_model
    from imgclf.modelfile import write_examples, examples_folder
    from imgclf.core import image_files
    from imgclf.photos import flower_photos
    d = tmp_path_factory.mktemp('with_examples')
    m = d/'flowers.safetensors'
    m.write_bytes(model.read_bytes())
    (d/'secret.jpg').write_bytes(image_files(flower_photos()/'rose')[0].read_bytes())
    classes = load_model(m).classes
    write_examples(m, [(image_files(flower_photos()/c)[10], c, *(('CC BY 2.0', 'A. Gardener', 'https://example.org/p') if i == 0 else ()))
                       for i, c in enumerate(classes)])
    (examples_folder(m)/'.hidden.jpg').write_bytes((d/'secret.jpg').read_bytes())
    with open(examples_folder(m)/'examples.csv', 'a', newline='') as f:
        for bad in ['../secret.jpg', str(d/'secret.jpg'), '.hidden.jpg', 'missing.jpg', '../flowers.safetensors']:
            f.write(f'{bad},rose,,,\n')
    return m


def test_examples_are_listed_and_served(with_examples, imgclf_home, tmp_path):
    from imgclf.model import load_model
    from imgclf.modelfile import examples_folder
    classes = load_model(with_examples).classes
    with serving([str(BIN/'imgclf'), 'serve', '--model', str(with_examples), '--port', '0'], None, tmp_path/'serve.log',
                 {**os.environ, 'IMGCLF_HOME': str(imgclf_home), 'OMP_NUM_THREADS': '2'}) as url:
        listed = httpx.get(url + '/examples').json()
        assert listed == [{'url': f'examples/{i}', 'name': f'{c}-1.jpg', 'class': c, 'licence': 'CC BY 2.0' if i == 0 else '',
                           'author': 'A. Gardener' if i == 0 else '', 'source_page': 'https://example.org/p' if i == 0 else ''}
                          for i, c in enumerate(classes)]
        for e in listed:
            r = httpx.get(f'{url}/{e["url"]}')
            assert r.status_code == 200 and r.headers['content-type'] == 'image/jpeg'
            assert r.content == (examples_folder(with_examples)/e['name']).read_bytes()
        secret = (with_examples.parent/'secret.jpg').read_bytes()
        for bad in [f'/examples/{len(classes)}', '/examples/-1', '/examples/1.0', '/examples/examples.csv', '/examples/.hidden.jpg',
                    '/examples/..%2Fsecret.jpg', '/examples/..%2F..%2Fflowers.safetensors', '/examples/%2e%2e/secret.jpg',
                    '/examples/0/../../secret.jpg', '/examples/%2Fetc%2Fpasswd']:
            r = httpx.get(url + bad)
            assert r.status_code == 404 and r.content != secret, (bad, r.status_code)
        assert httpx.get(url + '/examples/0').status_code == 200  # still serving


def test_a_model_without_examples_lists_none(model, imgclf_home, tmp_path):
    alone = tmp_path/'alone.safetensors'
    alone.write_bytes(model.read_bytes())
    with serving([str(BIN/'imgclf'), 'serve', '--model', str(alone), '--port', '0'], None, tmp_path/'serve.log',
                 {**os.environ, 'IMGCLF_HOME': str(imgclf_home), 'OMP_NUM_THREADS': '2'}) as url:
        assert httpx.get(url + '/examples').json() == []
        assert httpx.get(url + '/examples/0').status_code == 404
        assert 'No photo at hand?' in httpx.get(url + '/').text  # in the page, hidden until the list has photos
