"Any timm backbone by name: weights from a stand-in Hugging Face hub on 127.0.0.1; the model file rebuilds it with the hub gone."
import hashlib, json, os, shutil, subprocess, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote
import httpx
import pytest
from conftest import BIN, free_port, serving
from imgclf.model import FORMAT_VERSION

REPO, COMMIT = 'stand-in/tiny', 'c0ffee' * 6 + 'c0ff'  # a hub id and the 40-hex commit its files are at
LFS = ('model.safetensors',)  # served as the Hub serves large files: their sha256 as X-Linked-Etag


class StandInHub(ThreadingHTTPServer):
    "Answers huggingface_hub's file requests as huggingface.co does: HEAD and GET `/{repo_id}/resolve/{revision}/{filename}`"
    daemon_threads = True
    def __init__(self, repos:dict):  # {repo_id: {filename: bytes}}
        self.repos, self.requests = repos, []
        super().__init__(('127.0.0.1', 0), _Handler)
    @property
    def url(self): return f'http://127.0.0.1:{self.server_address[1]}'


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args): pass
    def do_HEAD(self): self._answer(body=False)
    def do_GET(self): self._answer(body=True)

    def _answer(self, body:bool):
        self.server.requests.append((self.command, self.path))
        parts = unquote(self.path.split('?')[0]).strip('/').split('/')
        if len(parts) < 5 or parts[2] != 'resolve': return self._error(404, 'EntryNotFound', 'Not a file URL')
        repo, revision, filename = '/'.join(parts[:2]), parts[3], '/'.join(parts[4:])
        files = self.server.repos.get(repo)
        if files is None: return self._error(401, 'RepoNotFound', 'Repository not found')  # the Hub hides private repos too
        if revision not in ('main', COMMIT): return self._error(404, 'RevisionNotFound', f'Invalid rev id: {revision}')
        if filename not in files: return self._error(404, 'EntryNotFound', f'{filename} does not exist', commit=True)
        data = files[filename]
        self.send_response(200)
        self.send_header('X-Repo-Commit', COMMIT)
        if filename in LFS:
            sha = hashlib.sha256(data).hexdigest()
            self.send_header('ETag', f'"{sha}"'); self.send_header('X-Linked-Etag', f'"{sha}"')
            self.send_header('X-Linked-Size', str(len(data)))
        else: self.send_header('ETag', f'"{hashlib.sha1(b"blob %d" % len(data) + bytes(1) + data).hexdigest()}"')  # git's blob id
        self.send_header('Content-Type', 'application/octet-stream')
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        if body: self.wfile.write(data)

    def _error(self, status, code, message, commit=False):
        self.send_response(status)
        self.send_header('X-Error-Code', code); self.send_header('X-Error-Message', message)
        if commit: self.send_header('X-Repo-Commit', COMMIT)
        body = json.dumps({'error': message}).encode()
        self.send_header('Content-Type', 'application/json'); self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        if self.command != 'HEAD': self.wfile.write(body)


@pytest.fixture(scope='module')
def tiny_repo(tmp_path_factory):
    "The files of a tiny timm network on the hub, as `timm.models.save_for_hf` writes them: config.json and model.safetensors"
    import timm, torch
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp('tiny')
    timm.models.save_for_hf(timm.create_model('test_resnet', num_classes=10), d, safe_serialization=True)
    return {f.name: f.read_bytes() for f in d.iterdir() if f.name in ('config.json', 'model.safetensors')}


@pytest.fixture(scope='module')
def hub(tiny_repo):
    "The stand-in hub on a free port of 127.0.0.1; stopped afterwards (tests may stop it earlier)"
    server = StandInHub({REPO: tiny_repo})
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown(); server.server_close(); thread.join(10)


@pytest.fixture(scope='module')
def photos(imgclf_home, tmp_path_factory):
    "Two classes of the built-in photos"
    from imgclf.photos import flower_photos
    path = flower_photos(tmp_path_factory.mktemp('photos')/'flowers')
    for d in path.iterdir():
        if d.is_dir() and d.name not in ('daisy', 'rose'): shutil.rmtree(d)
    return path


def env(imgclf_home, endpoint:str, cache:Path) -> dict:
    "A child's environment: huggingface_hub reads HF_ENDPOINT when it is imported"
    return {**os.environ, 'IMGCLF_HOME': str(imgclf_home), 'HF_ENDPOINT': endpoint, 'HF_HUB_CACHE': str(cache),
            'HF_HUB_DISABLE_TELEMETRY': '1', 'HF_HUB_OFFLINE': '0', 'OMP_NUM_THREADS': '2'}


def run(args, env, timeout=600):
    return subprocess.run([str(BIN/'imgclf'), *args], capture_output=True, text=True, env=env, timeout=timeout)


def test_a_name_the_hub_does_not_have_says_so(hub, photos, imgclf_home, tmp_path):
    proc = run(['train', str(photos), '--arch', 'hf-hub:stand-in/nothing', '--quiet', '--out', str(tmp_path/'run')],
               env(imgclf_home, hub.url, tmp_path/'cache'))
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert 'hf-hub:stand-in/nothing: no such model on the Hugging Face hub' in proc.stderr


def test_the_linear_recipe_on_a_hub_model(hub, photos, imgclf_home, tmp_path):
    "`--recipe linear` (the default) with a hub model: its pooled features and one linear layer, in a file that rebuilds both"
    import pandas as pd
    from imgclf.model import read_header, load_model
    out = tmp_path/'run'
    proc = run(['train', str(photos), '--arch', f'hf-hub:{REPO}', '--size', '64', '--out', str(out), '--quiet'],
               env(imgclf_home, hub.url, tmp_path/'cache'))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert 'a linear layer on its features' in proc.stdout
    meta = json.loads(read_header(out/'model.safetensors')['__metadata__']['imgclf'])
    assert meta['timm']['pooled'] is True and meta['timm']['levels'] == [] and [l['layer'] for l in meta['head']] == ['Linear']
    ran = json.loads((out/'run.json').read_text())
    assert ran['recipe'] == 'linear' and ran['epochs'] == 0 and ran['lr'] is None
    wrong = pd.read_csv(out/'misclassified.csv')
    clf = load_model(out/'model.safetensors')  # nothing downloaded: the file rebuilds the network
    for f, predicted in zip(wrong.file, wrong.predicted): assert clf.predict(f).label == predicted, f


@pytest.fixture(scope='module')
def trained(hub, photos, imgclf_home, tmp_path_factory):
    "`imgclf train --arch hf-hub:stand-in/tiny` against the stand-in hub; the hub is stopped afterwards"
    out, cache = tmp_path_factory.mktemp('run'), tmp_path_factory.mktemp('hf_cache')
    proc = run(['train', str(photos), '--arch', f'hf-hub:{REPO}', '--recipe', 'fine_tune', '--epochs', '1', '--size', '64', '--lr', '2e-3',
                '--bs', '16', '--out', str(out), '--quiet'], env(imgclf_home, hub.url, cache))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    requests = list(hub.requests)
    hub.shutdown(); hub.server_close()  # from here on nothing can be downloaded
    return out/'model.safetensors', requests, cache


def test_weights_came_from_the_hub_and_the_file_records_the_architecture(trained, tiny_repo):
    from imgclf.model import read_header
    model, requests, cache = trained
    assert ('GET', f'/{REPO}/resolve/main/config.json') in requests
    assert ('GET', f'/{REPO}/resolve/main/model.safetensors') in requests
    assert list(cache.glob('models--stand-in--tiny/snapshots/*/model.safetensors'))  # in huggingface_hub's cache
    meta = json.loads(read_header(model)['__metadata__']['imgclf'])
    assert meta['format_version'] == FORMAT_VERSION and meta['arch'] == 'test_resnet'
    rec = meta['timm']
    assert rec['name'] == f'hf-hub:{REPO}' and rec['pooled'] is False
    assert rec['features'] == json.loads(tiny_repo['config.json'])['num_features']
    assert rec['pretrained_cfg']['hf_hub_id'] == REPO and rec['pretrained_cfg']['input_size'][0] == 3
    assert meta['mean'] == pytest.approx(rec['pretrained_cfg']['mean'])  # fastai normalised with timm's statistics


def test_loads_predicts_and_serves_with_the_hub_gone(trained, photos, imgclf_home, tmp_path):
    from imgclf.core import image_files
    from imgclf.model import load_model
    model, _, _ = trained
    gone = env(imgclf_home, f'http://127.0.0.1:{free_port()}', tmp_path/'empty_cache')  # nothing listens there, nothing is cached
    photo = image_files(photos/'rose')[0]
    code = ('import sys; from imgclf.model import load_model; c = load_model(sys.argv[1]); p = c.predict(sys.argv[2]); '
            'print(c.meta["arch"], p.label, round(p.probability, 4))')
    proc = subprocess.run([sys.executable, '-c', code, str(model), str(photo)], capture_output=True, text=True, env=gone, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    want = load_model(model).predict(photo)
    assert proc.stdout.split() == ['test_resnet', want.label, str(round(want.probability, 4))]
    assert not (tmp_path/'empty_cache').exists()  # huggingface_hub was never asked for anything

    proc = run(['predict', str(model), str(photo)], gone, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert want.label in proc.stdout

    with serving([str(BIN/'imgclf'), 'serve', '--model', str(model), '--port', '0'], None, tmp_path/'serve.log', gone) as url:
        r = httpx.post(url + '/predict', files={'file': (photo.name, photo.read_bytes(), 'image/jpeg')}, timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()['label'] == want.label and abs(r.json()['probability'] - want.probability) < 1e-5


def test_hub_unreachable_is_one_line_and_status_1(photos, imgclf_home, tmp_path):
    proc = run(['train', str(photos), '--arch', f'hf-hub:{REPO}', '--size', '64', '--quiet',
                '--out', str(tmp_path/'run')], env(imgclf_home, f'http://127.0.0.1:{free_port()}', tmp_path/'cache'))
    assert proc.returncode == 1, proc.stderr[-3000:]
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, proc.stderr[-3000:]
    assert 'Connect to the internet once' in lines[0] and 'efficientnet_lite0' in lines[0] and 'Traceback' not in proc.stderr


def test_an_unknown_name_suggests_close_ones(photos, imgclf_home, tmp_path):
    proc = run(['train', str(photos), '--arch', 'convnxt_tiny', '--quiet', '--out', str(tmp_path/'run')],
               env(imgclf_home, f'http://127.0.0.1:{free_port()}', tmp_path/'cache'))
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr[-3000:]
    assert "Unknown backbone 'convnxt_tiny'" in proc.stderr and 'convnext_tiny' in proc.stderr
