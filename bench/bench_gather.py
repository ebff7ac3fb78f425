"""Benchmark: imgclf's `gather` against fastai's `download_images`, both with their defaults, on one URL list.

A local server (127.0.0.1) serves real photos from a folder-per-class dataset, plus dead links (HTTP 404)
and links that stall (the server accepts the request and never answers). Both downloaders get the same
URLs in one run; we time each and count the failures each one reports with a reason.

    python bench/bench_gather.py                       # the built-in flower photos (about 400)
    python bench/bench_gather.py --data ~/my_dataset   # any folder of class folders, e.g. a bigger photo set
    python bench/bench_gather.py --data ~/my_dataset --photos 500   # at most 500 of its photos

fastai is given every URL in a single `download_images` call (its most favourable use: the course calls it
once per class, so stalls in one class cannot overlap with the next class's downloads).
"""
import argparse, contextlib, os, random, shutil, sys, tempfile, threading, time
from collections import Counter
from http.server import BaseHTTPRequestHandler
from pathlib import Path



def serve(files:dict, stop:threading.Event):
    "Serve `files` (URL path -> file on disk); /dead/* answers 404; /stall/* never answers"
    class H(BaseHTTPRequestHandler):
        protocol_version = 'HTTP/1.1'
        def log_message(self, *a): pass
        def do_GET(self):
            if self.path.startswith('/stall/'): stop.wait(600); self.close_connection = True; return
            f = files.get(self.path)
            if f is None:
                self.send_response(404); self.send_header('Content-Length', '0'); self.end_headers(); return
            body = f.read_bytes()
            self.send_response(200); self.send_header('Content-Type', 'image/jpeg')
            self.send_header('Content-Length', str(len(body))); self.end_headers(); self.wfile.write(body)
    from imgclf.localweb import start_server
    httpd = start_server(H)
    return httpd, f'http://127.0.0.1:{httpd.server_port}'


def url_lists(data:Path, base:str, photos:int, dead:float, stall:float, seed:int):
    "Per class: a shuffled list of photo URLs with dead and stalling links mixed in; and the served files"
    classes = sorted(p.name for p in data.iterdir() if p.is_dir())
    per_class = {c: sorted(f for f in (data/c).iterdir() if f.suffix.lower() in ('.jpg', '.jpeg', '.png')) for c in classes}
    n_c = max(1, photos // len(classes))
    rng, files, lists = random.Random(seed), {}, {}
    for c in classes:
        urls = []
        for f in per_class[c][:n_c]:
            files[f'/{c}/{f.name}'] = f; urls.append(f'{base}/{c}/{f.name}')
        urls += [f'{base}/dead/{c}{i}.jpg' for i in range(round(len(urls) * dead))]
        urls += [f'{base}/stall/{c}{i}.jpg' for i in range(round(len(urls) * stall / (1 + dead)))]
        rng.shuffle(urls); lists[c] = urls
    return lists, files


def run_imgclf(lists, work:Path):
    from imgclf.gather import gather
    dest, url_dir = work/'imgclf', work/'urls'
    url_dir.mkdir(parents=True, exist_ok=True)
    classes = {}
    for c, urls in lists.items():
        (url_dir/f'urls_{c}.txt').write_text('\n'.join(urls) + '\n'); classes[c] = url_dir/f'urls_{c}.txt'
    t = time.perf_counter()
    rep = gather(dest, classes, progress=False)  # every default
    return time.perf_counter() - t, rep


def run_fastai(lists, work:Path):
    from fastai.vision.utils import download_images
    dest = work/'fastai'
    urls = [u for us in lists.values() for u in us]
    t = time.perf_counter()
    with open(os.devnull, 'w') as null, contextlib.redirect_stdout(null):  # it draws an empty progress bar per URL
        download_images(dest, urls=urls)  # every default: 8 threads, timeout=4
    took = time.perf_counter() - t
    return took, dest


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--data', type=Path, default=None, help='folder of class folders of photos (default: the built-in flower photos)')
    ap.add_argument('--photos', type=int, default=2000, help='photos to serve, spread over the classes (default: %(default)s)')
    ap.add_argument('--dead', type=float, default=0.1, help='dead links, as a fraction of the photos (default: %(default)s)')
    ap.add_argument('--stall', type=float, default=0.1, help='stalling links, as a fraction of the photos (default: %(default)s)')
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--keep', action='store_true', help='keep the downloaded folders (printed at the end)')
    a = ap.parse_args()
    stop = threading.Event()
    work = Path(tempfile.mkdtemp(prefix='bench-gather-'))
    os.environ.setdefault('IMGCLF_HOME', str(work/'home'))
    if a.data is None:
        from imgclf.photos import flower_photos
        a.data = flower_photos(work/'photos')
    if not a.data.is_dir(): sys.exit(f'No dataset folder at {a.data}; pass --data')
    files = {}
    httpd, base = serve(files, stop)
    lists, served = url_lists(a.data, base, a.photos, a.dead, a.stall, a.seed)
    files.update(served)
    n = sum(map(len, lists.values()))
    kinds = Counter(u.split('/')[3] if u.split('/')[3] in ('dead', 'stall') else 'photo' for us in lists.values() for u in us)
    print(f'{n} URLs in {len(lists)} classes: {kinds["photo"]} photos, {kinds["dead"]} dead links, {kinds["stall"]} stalling links')
    print(f'machine: {os.cpu_count()} CPU cores, Python {sys.version.split()[0]}')
    try:
        t_i, rep = run_imgclf(lists, work)
        reasons = Counter(r['reason'].split(':')[0] for r in rep.dropped)
        no_reason = sum(1 for r in rep.dropped if not r['reason'])
        import inspect
        from imgclf.gather import gather
        d = {k: v.default for k, v in inspect.signature(gather).parameters.items()}
        print(f"\nimgclf gather (defaults: {d['workers']} threads, timeout={d['timeout']} s (connect, read), "
              f"deadline={d['deadline']:g} s, shrink={d['shrink']}): {t_i:.1f} s")
        print(f'  kept {len(rep.kept)}, dropped {len(rep.dropped)}; dropped with a reason in the manifest: '
              f'{len(rep.dropped) - no_reason}/{len(rep.dropped)}')
        for k, v in reasons.most_common(): print(f'    {v:5d}  {k}')
        t_f, fdest = run_fastai(lists, work)
        got = [p for p in fdest.iterdir() if p.is_file()] if fdest.exists() else []
        parts = [p for p in got if p.name.endswith('.part')]
        print(f'\nfastai download_images (defaults: 8 threads, timeout=4): {t_f:.1f} s')
        print(f'  files written {len(got) - len(parts)} (+ {len(parts)} .part leftovers); URLs without a file: '
              f'{n - (len(got) - len(parts))}; failures reported with a reason: 0 (download_images discards every error)')
        print(f'\nwall time imgclf / fastai: {t_i / t_f:.3f}  (fastai takes {t_f / t_i:.1f}x as long; target: imgclf <= 1/3)')
    finally:
        stop.set(); httpd.shutdown(); httpd.server_close()
        if a.keep: print(f'\nfolders kept in {work}')
        else: shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__': main()
