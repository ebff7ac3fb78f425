"""`imgclf serve` against the tutorials' web-service design, in one run, on the built-in flower photos.

The tutorials' design: a Flask app that loads the fastai pickle with `load_learner` and calls `learn.predict` on
each upload, run the way `app.run()` runs it (a thread per request), in its own process. imgclf's: `imgclf
serve` (Starlette on uvicorn, the safe model file, decoding in threads, the network on batches of whatever is
waiting). Both models come from one learner trained here on the built-in photos; both servers get 2 torch threads.

N clients post real photos for a fixed time each; printed per server: requests/s, p50 and p95 latency, peak
memory (RSS of the server process), and the ratio to the tutorials' design. imgclf is also run with batching off
(at most one image through the network at once), to show what batching pays, and with one torch thread instead
of one per core, to show what the thread setting does on a machine the clients share. Last, 200 uploads of mixed good,
huge (over the limit), broken and non-image files go to `imgclf serve`: every answer must be 200, 413 or 422.

Needs flask, for the tutorials' server only (a benchmark dependency, not one of imgclf's):
    pip install flask
Run it on an otherwise idle machine: other work changes the timings.
    env OMP_NUM_THREADS=2 python bench/bench_serve.py
"""
import argparse, io, os, random, subprocess, sys, tempfile, threading, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]/'tests'))
from conftest import free_port  # noqa: E402

FLASK_APP = r'''
import sys, warnings
warnings.simplefilter('ignore')
from flask import Flask, request, jsonify
from fastai.vision.all import load_learner, PILImage
learn = load_learner(sys.argv[1])
app = Flask(__name__)

@app.route('/predict', methods=['POST'])
def predict():
    img = PILImage.create(request.files['file'].read())
    label, idx, probs = learn.predict(img)
    return jsonify(label=str(label), probability=float(probs[idx]),
                   probs={str(c): float(p) for c, p in zip(learn.dls.vocab, probs)})

@app.route('/health')
def health(): return 'ok'

app.run(host='127.0.0.1', port=int(sys.argv[2]))  # Flask's default: a thread per request
'''

UNBATCHED = r'''
import sys, torch, uvicorn
from imgclf.model import load_model
from imgclf.serve import create_app
torch.set_num_threads(2)
uvicorn.run(create_app(load_model(sys.argv[1]), max_batch=1), host='127.0.0.1', port=int(sys.argv[2]), log_level='warning')
'''


ONE_THREAD = r'''
import sys
from imgclf.serve import serve
serve(sys.argv[1], port=int(sys.argv[2]), threads=1)
'''


class Server:
    "A server process on 127.0.0.1, waited for, its peak RSS sampled, stopped on exit"
    def __init__(self, name, argv, port):
        self.name, self.url, self.peak = name, f'http://127.0.0.1:{port}', 0
        env = {**os.environ, 'OMP_NUM_THREADS': '2'}
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        import httpx
        deadline = time.time() + 180
        while True:
            try:
                if httpx.get(self.url + '/health', timeout=2).status_code == 200: break
            except httpx.TransportError: pass
            if self.proc.poll() is not None or time.time() > deadline:
                self.proc.kill(); raise SystemExit(f'{name} did not start: {self.proc.stderr.read().decode()[-2000:]}')
            time.sleep(0.3)
        self._stop = threading.Event()
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self):
        import psutil
        p = psutil.Process(self.proc.pid)
        while not self._stop.is_set():
            try: self.peak = max(self.peak, p.memory_info().rss + sum(c.memory_info().rss for c in p.children(recursive=True)))
            except psutil.Error: pass
            time.sleep(0.05)

    def __enter__(self): return self
    def __exit__(self, *a):
        self._stop.set(); self.proc.terminate()
        try: self.proc.wait(20)
        except subprocess.TimeoutExpired: self.proc.kill(); self.proc.wait()


def multipart(name:str, data:bytes) -> tuple[bytes, str]:
    "A multipart/form-data body with `data` as the field `file`, and its content type"
    b = 'imgclfbenchboundary'
    head = f'--{b}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\nContent-Type: image/jpeg\r\n\r\n'
    return head.encode() + data + f'\r\n--{b}--\r\n'.encode(), f'multipart/form-data; boundary={b}'


def load(url, photos, clients, seconds):
    """`clients` threads posting photos for `seconds`: (answers/s within the time, latencies in s, failures).
    A light client (http.client, bodies encoded once, keep-alive where the server allows it), so that the load
    generator, on the same cores, takes as little as it can from the server it measures."""
    import http.client
    host, port = url.removeprefix('http://').split(':')
    bodies = [multipart(n, d) for n, d in photos]
    lat, errors, lock, done = [], [], threading.Lock(), [0]
    end = time.perf_counter() + seconds
    def client(i):
        rnd, conn = random.Random(i), None
        while time.perf_counter() < end:
            body, ctype = rnd.choice(bodies)
            t = time.perf_counter()
            try:
                if conn is None: conn = http.client.HTTPConnection(host, int(port), timeout=60)
                conn.request('POST', '/predict', body=body, headers={'Content-Type': ctype})
                r = conn.getresponse(); data = r.read()
                ok, why = r.status == 200 and b'"label"' in data, f'{r.status} {data[:80]!r}'
                if r.version == 10 or (r.getheader('connection') or '').lower() == 'close': conn.close(); conn = None
            except (OSError, http.client.HTTPException) as e:
                ok, why = False, repr(e)[:100]
                if conn is not None: conn.close(); conn = None
            t1 = time.perf_counter()
            with lock:
                if ok: lat.append(t1 - t); done[0] += t1 <= end
                else: errors.append(why)
        if conn is not None: conn.close()
    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as ex: list(ex.map(client, range(clients)))
    return done[0] / (end - t0), np.array(lat), errors


def mixed_uploads(photos, n=200, seed=0):
    "`n` uploads: good photos, a large real photo, over-the-limit files, broken JPEGs, text, HTML, empty files"
    from PIL import Image
    rnd = random.Random(seed)
    big = io.BytesIO()
    Image.open(io.BytesIO(photos[0][1])).resize((4000, 3000)).save(big, 'JPEG', quality=90)
    kinds = {'good': lambda: rnd.choice(photos)[1], 'large photo': lambda: big.getvalue(),
             'huge': lambda: b'\xff\xd8\xff\xe0' + os.urandom(30 * 2**20),
             'broken': lambda: rnd.choice(photos)[1][:rnd.randrange(10, 2000)],
             'not an image': lambda: rnd.choice([b'hello', b'<!doctype html><html>404</html>', b'', b'%PDF-1.4 ...', os.urandom(5000)])}
    names = list(kinds)
    return [(k, kinds[k]()) for k in (names[i % len(names)] for i in range(n))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--clients', type=int, default=8)
    ap.add_argument('--seconds', type=float, default=20, help='load time per server')
    args = ap.parse_args()
    import httpx, warnings
    warnings.simplefilter('ignore')
    try: import flask  # noqa: F401
    except ImportError: raise SystemExit('The tutorials\' server needs flask: pip install flask')
    home = Path(tempfile.mkdtemp())
    os.environ['IMGCLF_HOME'] = str(home)
    from imgclf.train import demo_learner
    from imgclf.export import export_classifier
    from imgclf.photos import flower_photos
    from imgclf.core import image_files
    learn = demo_learner(out=home/'runs')
    safe = export_classifier(learn, home/'flowers.safetensors', name='flowers')
    pkl = export_classifier(learn, home/'flowers.pkl', pickle=True)
    photos = [(f.name, f.read_bytes()) for f in image_files(flower_photos())]
    print(f'{len(photos)} photos, {learn.dls.vocab}, {args.clients} clients, {args.seconds:g} s per server, {os.cpu_count()} cores')
    (home/'flask_app.py').write_text(FLASK_APP)
    servers = [('tutorials: Flask + learn.predict', lambda p: [sys.executable, str(home/'flask_app.py'), str(pkl), str(p)]),
               ('imgclf serve, batching off', lambda p: [sys.executable, '-c', UNBATCHED, str(safe), str(p)]),
               ('imgclf serve, 1 torch thread', lambda p: [sys.executable, '-c', ONE_THREAD, str(safe), str(p)]),
               ('imgclf serve', lambda p: [str(Path(sys.executable).parent/'imgclf'), 'serve', '--model', str(safe), '--port', str(p)])]
    rows = {}
    for name, argv in servers:
        port = free_port()
        with Server(name, argv(port), port) as s:
            load(s.url, photos, args.clients, 3)  # warm up
            rps, lat, errors = load(s.url, photos, args.clients, args.seconds)
            rows[name] = (rps, np.percentile(lat, 50)*1000, np.percentile(lat, 95)*1000, s.peak/2**20, len(lat), len(errors))
            if errors: print(f'  {name}: {len(errors)} failed requests, e.g. {errors[0]}')
            if name == 'imgclf serve':
                counts, bad = {}, []
                with httpx.Client(timeout=120) as c:
                    for kind, data in mixed_uploads(photos):
                        try: code = c.post(s.url + '/predict', files={'file': (f'{kind}.jpg', data, 'image/jpeg')}).status_code
                        except httpx.HTTPError as e: code = type(e).__name__
                        counts[(kind, code)] = counts.get((kind, code), 0) + 1
                        if code not in (200, 413, 422): bad.append((kind, code))
                alive = httpx.get(s.url + '/health').status_code == 200
    base = rows['tutorials: Flask + learn.predict'][0]
    print(f'\n{"server":<34} {"req/s":>7} {"p50 ms":>8} {"p95 ms":>8} {"peak MB":>8} {"requests":>9} {"failed":>7} {"vs Flask":>9}')
    for name, (rps, p50, p95, mb, n, nerr) in rows.items():
        print(f'{name:<34} {rps:7.1f} {p50:8.0f} {p95:8.0f} {mb:8.0f} {n:9d} {nerr:7d} {rps/base:8.1f}x')
    print('\n200 mixed uploads to imgclf serve (kind, status: count):')
    print('  ' + ', '.join(f'{k} {c}: {n}' for (k, c), n in sorted(counts.items(), key=str)))
    print(f'  server errors (5xx or dropped): {len(bad)}; still healthy afterwards: {alive}')
    r = rows['imgclf serve']
    print(f'\nTargets: >= 3x requests/s at {args.clients} clients: {r[0]/base:.1f}x {"met" if r[0]/base >= 3 else "NOT met"}; '
          f'p95 < 250 ms: {r[2]:.0f} ms {"met" if r[2] < 250 else "NOT met"}; no server error: {"met" if not bad and alive else "NOT met"}')


if __name__ == '__main__': main()
