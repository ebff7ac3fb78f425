"Tests of imgclf.gather against a real HTTP server on 127.0.0.1 that misbehaves in all the ways the web does"
import hashlib, inspect, io, json, os, re, signal, struct, subprocess, sys, threading, zlib
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import urlparse, parse_qs, unquote

import numpy as np
import pytest
from PIL import Image

FIXTURES = Path(__file__).parent/'fixtures'


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv('IMGCLF_HOME', str(tmp_path/'home'))


import imgclf.download as D, imgclf.manifest as M
from imgclf.core import ImgclfError
from imgclf.gather import download_images, gather, rebuild
from imgclf.images import DownloadError, ImageError, Failure, load_image
from imgclf.manifest import read_manifest
from imgclf.download import fetch_bytes, is_transient
from imgclf.search import read_url_file, search_images_commons, search_images_ddgs
from imgclf.dedupe import dedupe, hash_distances
from imgclf.localweb import start_server

GATHER = {k: p.default for k, p in inspect.signature(gather).parameters.items()}
FETCH = {k: GATHER[k] for k in ('timeout', 'deadline', 'max_bytes', 'retries')}  # `fetch_bytes`'s limits, as gather has them

# ---------------------------------------------------------------- pictures and bad files

def photo(seed, size=(160, 120)):
    "A smooth random colour picture: distinct per seed, stable under resizing (like a photo)"
    a = np.random.default_rng(seed).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    return Image.fromarray(a).resize(size, Image.Resampling.BICUBIC)

def enc(im, fmt='JPEG', **kw):
    b = io.BytesIO(); im.save(b, fmt, **kw); return b.getvalue()

def png_claiming(w, h):
    "A tiny PNG whose header claims w x h pixels"
    def chunk(t, d): return struct.pack('>I', len(d)) + t + d + struct.pack('>I', zlib.crc32(t + d) & 0xffffffff)
    return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 8, 2, 0, 0, 0))
            + chunk(b'IDAT', zlib.compress(b'\x00' * 100)) + chunk(b'IEND', b''))

def cmyk_jpeg(): return enc(Image.new('CMYK', (120, 90), (0, 255, 255, 0)))  # red

def png16():
    a = np.full((90, 120), 0x8000, np.uint16); a[:, :60] = 0xFFFF
    return enc(Image.fromarray(a), 'PNG')

def palette_transparent():
    im = Image.new('P', (120, 90), 0)
    im.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    im.paste(1, (60, 0, 120, 90))
    return enc(im, 'PNG', transparency=0)  # left half transparent, right half blue

def exif_rotated():
    im = Image.new('RGB', (120, 80), (0, 200, 0)); im.paste((255, 0, 0), (0, 0, 40, 40))  # red top-left corner
    ex = Image.Exif(); ex[0x0112] = 6  # "turn 90 degrees clockwise to view"
    return enc(im, exif=ex, quality=95)

def animated_gif():
    frames = [Image.new('RGB', (100, 80), c) for c in ('red', 'lime', 'blue')]
    return enc(frames[0], 'GIF', save_all=True, append_images=frames[1:], duration=100)

SVG = b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="100" height="100"><circle r="40"/></svg>'
HTML = b'<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head><body>Not found</body></html>'

# ---------------------------------------------------------------- the server

class Server:
    "A ThreadingHTTPServer on a free port; `routes` maps a path to a function of the request handler"
    def __init__(self):
        self.routes, self.received, self.served, self.queries = {}, {}, {}, {}
        self.stopping, self.lock = threading.Event(), threading.Lock()
        srv = self
        class H(BaseHTTPRequestHandler):
            protocol_version = 'HTTP/1.1'
            def log_message(self, *a): pass
            def do_GET(self):
                u = urlparse(self.path)
                with srv.lock:
                    srv.received[u.path] = srv.received.get(u.path, 0) + 1
                    srv.queries.setdefault(u.path, []).append(parse_qs(u.query))
                f = srv.routes.get(u.path) or next((v for k, v in srv.routes.items()
                                                    if k.endswith('*') and u.path.startswith(k[:-1])), None)
                if f is None: return self.reply(404, b'not here')
                try: f(self)
                except (BrokenPipeError, ConnectionResetError): return
            def reply(self, code, body=b'', ctype='image/jpeg', headers=(), length=True):
                self.send_response(code)
                self.send_header('Content-Type', ctype)
                for k, v in headers: self.send_header(k, v)
                if length is True: self.send_header('Content-Length', str(len(body)))
                elif length is not None: self.send_header('Content-Length', str(length))
                if length is None: self.send_header('Connection', 'close'); self.close_connection = True
                self.end_headers()
                self.wfile.write(body); self.wfile.flush()
                with srv.lock: srv.served[urlparse(self.path).path] = srv.served.get(urlparse(self.path).path, 0) + 1
        H.server_obj = self
        self.httpd = start_server(H)  # on a port of its own, with its own queue size
        self.url = f'http://127.0.0.1:{self.httpd.server_port}'

    def add(self, path, body, **kw): self.routes[path] = lambda h: h.reply(200, body, **kw); return self.url + path
    def reset(self): self.received.clear(); self.served.clear(); self.queries.clear()
    def close(self): self.stopping.set(); self.httpd.shutdown(); self.httpd.server_close()


@pytest.fixture
def srv():
    s = Server()
    yield s
    s.close()

@pytest.fixture
def waits(monkeypatch):
    "The seconds each retry waited, recorded instead of slept"
    got = []
    monkeypatch.setattr(D.time, 'sleep', got.append)
    return got

def stall(h): h.server_obj.stopping.wait(5)

def consistent(dest):
    "The manifest and the folder agree, and no partial file is left anywhere"
    rows = read_manifest(dest/'manifest.csv')
    assert not list(dest.rglob('*.part')), list(dest.rglob('*.part'))
    assert not (dest/'.manifest.journal').exists()
    kept = {r['file'] for r in rows if r['status'] == 'kept'}
    on_disk = {p.relative_to(dest).as_posix() for p in dest.glob('*/*') if p.is_file()}
    assert kept == on_disk, (kept ^ on_disk)
    for r in rows:
        if r['status'] == 'dropped': assert r['reason'] and not r['file'], r
    return rows

def by_url(rows, base): return {r['url'].removeprefix(base): r for r in rows}

# ---------------------------------------------------------------- URL files

def test_read_url_file(tmp_path):
    f = tmp_path/'urls_bear.txt'
    f.write_text('\ufeff# my bears\nhttps://a.example/1.jpg\n\n  http://b.example/2.png  \nhttps://a.example/1.jpg\n')
    assert read_url_file(f) == ['https://a.example/1.jpg', 'http://b.example/2.png']
    with pytest.raises(ImgclfError, match='URL file not found'): read_url_file(tmp_path/'nope.txt')
    with pytest.raises(ImgclfError, match='got a folder'): read_url_file(tmp_path)
    (tmp_path/'blank.txt').write_text('\n# only comments\n')
    with pytest.raises(ImgclfError, match='holds no image URLs'): read_url_file(tmp_path/'blank.txt')
    (tmp_path/'bad.txt').write_text('https://a.example/1.jpg\ndata:image/png;base64,iVBOR\n')
    with pytest.raises(ImgclfError, match=r"bad.txt has lines that are not http\(s\) URLs: line 2"): read_url_file(tmp_path/'bad.txt')
    (tmp_path/'bin.txt').write_bytes(b'\xff\xd8\xff\xe0binary')
    with pytest.raises(ImgclfError, match='not UTF-8'): read_url_file(tmp_path/'bin.txt')

# ---------------------------------------------------------------- search adapters, with recorded answers

def serve_ddg(srv, prefix='/ddg', fail_first=0, code=403):
    state = {'n': 0}
    srv.routes[prefix] = lambda h: h.reply(200, (FIXTURES/'ddg_home.html').read_bytes(), ctype='text/html')
    def ijs(h):
        state['n'] += 1
        if state['n'] <= fail_first: return h.reply(code, b'{}', ctype='application/json')
        h.reply(200, (FIXTURES/'ddg_images_grizzly.json').read_bytes(), ctype='application/json')
    srv.routes[prefix + '/i.js'] = ijs
    return srv.url + prefix

def test_ddgs_builds_requests_and_parses(srv):
    res = search_images_ddgs('grizzly bear', max_images=20, base_url=serve_ddg(srv))
    vqd_q = [q['q'][0] for q in srv.queries['/ddg']]
    assert vqd_q == ['grizzly bear', 'grizzly bear photo', 'grizzly bear close up']
    q = srv.queries['/ddg/i.js']
    assert [x['q'][0] for x in q] == vqd_q
    assert all(x['vqd'] == ['4-211434935338417813386128346745123093437'] and x['o'] == ['json'] and x['l'] == ['us-en']
               and x['p'] == ['1'] for x in q)
    assert 's' not in q[0]  # first page
    assert len(res) == 6  # three variants gave the same six results: no repeats
    assert res[0] == dict(source='ddgs', query='grizzly bear', url='https://upload.wikimedia.org/wikipedia/commons/a/a9/GrizzlyBearJeanBeaufort.jpg',
                          title='Grizzly bear - Wikipedia', source_page='https://en.wikipedia.org/wiki/Grizzly_bear', licence='', author='')
    assert res[5]['source_page'] == 'https://commons.wikimedia.org/wiki/File:Brown_bear_(Ursus_arctos_alascensis)_eating_salmon.jpg'
    assert res[2]['url'] == 'https://www.nps.gov/yell/learn/nature/images/grizzly-bear-sow.jpg?maxwidth=1300&quality=90'

def test_ddgs_variants_max_and_paging(srv):
    base = serve_ddg(srv)
    assert len(search_images_ddgs('grizzly bear', max_images=4, variants=['{term}', '{term} cub'], base_url=base)) == 4
    srv.reset()
    search_images_ddgs('grizzly bear', max_images=150, variants=['{term}'], base_url=base)
    assert srv.received['/ddg/i.js'] == 1  # only 6 results on page 1: page 2 is not asked for
    
def test_ddgs_rate_limit_backoff(srv, waits):
    base = serve_ddg(srv, fail_first=2)
    res = search_images_ddgs('grizzly bear', max_images=10, variants=['{term}'], backoff=0.2, base_url=base)
    assert len(res) == 6 and srv.received['/ddg/i.js'] == 3
    assert waits == [0.2, 0.4]  # waited 0.2 s, then 0.4 s
    srv.reset(); waits.clear()
    base = serve_ddg(srv, prefix='/ddg2', fail_first=99)
    with pytest.raises(ImgclfError, match="rate limited, 3 tries"):
        search_images_ddgs('grizzly bear', variants=['{term}'], retries=2, backoff=0.05, base_url=base)
    assert srv.received['/ddg2/i.js'] == 3 and waits == [0.05, 0.1]  # bounded

def test_ddgs_other_failure_not_retried(srv):
    base = serve_ddg(srv, fail_first=99, code=500)
    with pytest.raises(ImgclfError, match='answered HTTP 500'):
        search_images_ddgs('grizzly bear', variants=['{term}'], backoff=0.05, base_url=base)
    assert srv.received['/ddg/i.js'] == 1

def test_ddgs_unreachable_fails_fast(waits):
    import socket
    with socket.socket() as so: so.bind(('127.0.0.1', 0)); port = so.getsockname()[1]  # closed again: nobody listens
    with pytest.raises(ImgclfError, match=f"could not reach 127.0.0.1:{port}") as e:
        search_images_ddgs('grizzly bear', backoff=1, base_url=f'http://127.0.0.1:{port}')
    assert waits == [] and str(e.value).count('could not reach') == 1  # no waiting, no other variants

def serve_commons(srv, throttle=0):
    state = {'n': 0}
    def api(h):
        state['n'] += 1
        if state['n'] <= throttle: return h.reply(429, b'Too many requests', ctype='text/plain', headers=[('Retry-After', '1')])
        page = 2 if parse_qs(urlparse(h.path).query).get('gsroffset') else 1
        h.reply(200, (FIXTURES/f'commons_grizzly_{page}.json').read_bytes(), ctype='application/json; charset=utf-8')
    srv.routes['/w/api.php'] = api
    return srv.url + '/w/api.php'

def test_commons_builds_requests_and_parses(srv):
    res = search_images_commons('grizzly bear', max_images=10, thumb_width=400, api_url=serve_commons(srv))
    q1, q2 = srv.queries['/w/api.php']
    assert {k: v[0] for k, v in q1.items()} == dict(
        action='query', format='json', formatversion='2', generator='search', gsrsearch='grizzly bear filetype:bitmap',
        gsrnamespace='6', gsrlimit='10', prop='imageinfo', iiprop='url|extmetadata|size|mime',
        iiextmetadatafilter='LicenseShortName|Artist', iiurlwidth='400', maxlag='5')
    assert q2['gsroffset'] == ['3'] and q2['continue'] == ['gsroffset||']  # followed the continue token
    assert [r['title'] for r in res] == ['Ursus arctos horribilis.jpg', 'Grizzly Bear Yellowstone.jpg', 'Grizzly Denali Sept 2019.png']
    assert [r['licence'] for r in res] == ['CC BY-SA 3.0', 'Public domain', 'CC BY 2.0']  # the SVG map is left out
    assert [r['author'] for r in res] == ['Jean-Pierre Lavoie', 'Jim Peaco, National Park Service',
                                          'Denali National Park and Preserve from Denali Park, United States']
    assert res[0]['url'] == 'https://upload.wikimedia.org/wikipedia/commons/thumb/5/5e/Ursus_arctos_horribilis.jpg/400px-Ursus_arctos_horribilis.jpg'
    assert res[0]['source_page'] == 'https://commons.wikimedia.org/wiki/File:Ursus_arctos_horribilis.jpg'
    assert all(r['source'] == 'commons' and r['query'] == 'grizzly bear' for r in res)
    srv.reset()
    assert len(search_images_commons('grizzly bear', max_images=2, api_url=srv.url + '/w/api.php')) == 2
    assert srv.received['/w/api.php'] == 1

def test_commons_honours_retry_after(srv, waits):
    api = serve_commons(srv, throttle=1)
    assert len(search_images_commons('grizzly bear', max_images=3, backoff=0.05, api_url=api)) == 3
    assert waits == [1.0]  # Retry-After: 1, not the 0.05 s backoff
    srv.routes['/w/api.php'] = lambda h: h.reply(200, json.dumps({'error': {'code': 'badvalue', 'info': 'x'}}).encode(), ctype='application/json')
    with pytest.raises(ImgclfError, match="API error 'badvalue'"): search_images_commons('grizzly bear', api_url=api)

# ---------------------------------------------------------------- downloading: every way it can go wrong

def drip(h):
    body = enc(photo(1))
    h.send_response(200); h.send_header('Content-Length', str(len(body))); h.end_headers()
    for i in range(0, len(body), 50):
        if h.server_obj.stopping.is_set(): return
        h.wfile.write(body[i:i+50]); h.wfile.flush(); h.server_obj.stopping.wait(0.3)

def big_no_length(h):
    h.send_response(200); h.send_header('Connection', 'close'); h.end_headers(); h.close_connection = True
    for _ in range(40): h.wfile.write(b'\xff\xd8\xff' + b'\x00' * 9997)

def lying_length(h):
    body = enc(photo(2, (400, 300)))
    h.send_response(200); h.send_header('Content-Length', '1000'); h.send_header('Connection', 'close'); h.end_headers()
    h.close_connection = True; h.wfile.write(body)

def short_body(h):
    h.send_response(200); h.send_header('Content-Length', '50000'); h.send_header('Connection', 'close'); h.end_headers()
    h.close_connection = True; h.wfile.write(enc(photo(2))[:2000])

def redirect(to): return lambda h: h.reply(302, b'', headers=[('Location', to)])

@pytest.fixture
def bad_server(srv):
    r = srv.routes
    srv.add('/ok.jpg', enc(photo(0)))
    r['/404.jpg'] = lambda h: h.reply(404, b'gone', ctype='text/plain')
    r['/500.jpg'] = lambda h: h.reply(500, b'oops', ctype='text/plain')
    r['/stall.jpg'] = stall
    r['/drip.jpg'] = drip
    r['/big-announced.jpg'] = lambda h: h.reply(200, b'', length=50_000_000)
    r['/big-unannounced.jpg'] = big_no_length
    r['/lying-length.jpg'] = lying_length
    r['/short-body.jpg'] = short_body
    srv.add('/page.jpg', HTML, ctype='image/jpeg')
    srv.add('/cut.jpg', enc(photo(3, (400, 300)))[:3000])
    srv.add('/zero.jpg', b'')
    srv.add('/bomb.png', png_claiming(8000, 8000), ctype='image/png')
    srv.add('/huge-bomb.png', png_claiming(100_000, 100_000), ctype='image/png')
    srv.add('/drawing.svg', SVG, ctype='image/svg+xml')
    srv.add('/tiny.png', enc(photo(4, (40, 30)), 'PNG'))
    r['/loop-a'] = redirect('/loop-b'); r['/loop-b'] = redirect('/loop-a')
    for i in range(7): r[f'/hop{i}'] = redirect(f'/hop{i+1}')
    r['/hop7'] = lambda h: h.reply(200, enc(photo(5)))
    r['/moved.jpg'] = redirect('/ok.jpg')
    r['/ftp'] = redirect('ftp://example.com/x.jpg')
    return srv

LIMITS = dict(timeout=1, deadline=2.5, max_bytes=100_000, retries=2, progress=False)

def test_every_bad_download_is_dropped_with_its_reason(bad_server, tmp_path):
    srv = bad_server
    paths = ['/ok.jpg', '/404.jpg', '/500.jpg', '/stall.jpg', '/drip.jpg', '/big-announced.jpg', '/big-unannounced.jpg',
             '/lying-length.jpg', '/short-body.jpg', '/page.jpg', '/cut.jpg', '/zero.jpg', '/bomb.png', '/huge-bomb.png', '/drawing.svg',
             '/tiny.png', '/loop-a', '/hop0', '/moved.jpg', '/ftp', '/nowhere.jpg']
    recs = download_images([srv.url + p for p in paths], tmp_path/'dl', **LIMITS)
    got = {r['url'].removeprefix(srv.url): (r['status'], r['reason']) for r in recs}
    kinds = {r['url'].removeprefix(srv.url): r['kind'] for r in recs}
    assert [r['url'].removeprefix(srv.url) for r in recs] == paths  # in the order given
    assert got == {
        '/ok.jpg': ('kept', ''),
        '/404.jpg': ('dropped', 'http 404'),
        '/500.jpg': ('dropped', 'http 500'),
        '/stall.jpg': ('dropped', 'timeout: no answer within 1 s'),
        '/drip.jpg': ('dropped', got['/drip.jpg'][1]),
        '/big-announced.jpg': ('dropped', 'too large: 50,000,000 bytes announced, the limit is 100,000'),
        '/big-unannounced.jpg': ('dropped', 'too large: over 100,000 bytes'),
        '/lying-length.jpg': ('dropped', got['/lying-length.jpg'][1]),
        '/short-body.jpg': ('dropped', got['/short-body.jpg'][1]),
        '/page.jpg': ('dropped', 'not an image: HTML page'),
        '/cut.jpg': ('dropped', got['/cut.jpg'][1]),
        '/zero.jpg': ('dropped', 'empty: zero bytes'),
        '/bomb.png': ('dropped', 'decompression bomb: 8000x8000 pixels, the limit is 50,000,000'),
        '/huge-bomb.png': ('dropped', f'decompression bomb: over {Image.MAX_IMAGE_PIXELS:,} pixels'),
        '/drawing.svg': ('dropped', 'not an image: SVG drawing (vector, not a photo)'),
        '/tiny.png': ('dropped', 'too small: 40x30 px, the minimum is 64 px'),
        '/loop-a': ('dropped', f'redirect loop: {srv.url}/loop-b -> {srv.url}/loop-a'),
        '/hop0': ('dropped', 'too many redirects: more than 5'),
        '/moved.jpg': ('kept', ''),
        '/ftp': ('dropped', 'bad url: ftp://example.com/x.jpg'),
        '/nowhere.jpg': ('dropped', 'http 404'),
    }
    assert got['/drip.jpg'][1].startswith('timeout: over the 2.5 s deadline')  # never silent for 1 s, but too slow in all
    assert got['/cut.jpg'][1].startswith('broken image: image file is truncated')
    assert got['/lying-length.jpg'][1].startswith('broken image')  # only the announced 1,000 bytes are read
    assert got['/short-body.jpg'][1].startswith('connection error')  # promised 50,000 bytes, sent 2,000 and hung up
    assert {p: k for p, k in kinds.items() if k} == {
        '/404.jpg': 'http', '/500.jpg': 'busy', '/stall.jpg': 'timeout', '/drip.jpg': 'timeout', '/big-announced.jpg': 'too_large',
        '/big-unannounced.jpg': 'too_large', '/lying-length.jpg': 'broken', '/short-body.jpg': 'connection', '/page.jpg': 'not_image',
        '/cut.jpg': 'broken', '/zero.jpg': 'empty', '/bomb.png': 'bomb', '/huge-bomb.png': 'bomb', '/drawing.svg': 'not_image',
        '/tiny.png': 'too_small', '/loop-a': 'redirect', '/hop0': 'redirect', '/ftp': 'bad_url', '/nowhere.jpg': 'http'}
    # every limit held: the silent and the dripping server were each asked once, then given up on
    assert srv.received['/stall.jpg'] == 1 and srv.received['/drip.jpg'] == 1
    # retried only what is worth retrying
    assert srv.received['/500.jpg'] == 3 and srv.received['/404.jpg'] == 1
    assert srv.received.get('/hop6', 0) == 0 and srv.received['/hop5'] == 1
    assert {p for p, k in kinds.items() if is_transient(k)} == {'/500.jpg', '/stall.jpg', '/drip.jpg', '/short-body.jpg'}
    # the same picture through a redirect is stored once; nothing else was written, and no partial file
    assert [p.name for p in (tmp_path/'dl').iterdir()] == [recs[0]['file']] == [recs[paths.index('/moved.jpg')]['file']]

def test_retry_after_is_honoured_and_capped(srv, tmp_path, waits):
    state = {'n': 0}
    def busy(h):
        state['n'] += 1
        if state['n'] == 1: return h.reply(429, b'slow down', ctype='text/plain', headers=[('Retry-After', '1')])
        h.reply(200, enc(photo(6)))
    srv.routes['/busy.jpg'] = busy
    assert len(fetch_bytes(srv.url + '/busy.jpg', **FETCH | dict(timeout=1))) > 1000
    assert waits == [1.0] and srv.received['/busy.jpg'] == 2  # waited the second the server asked for
    srv.routes['/later.jpg'] = lambda h: h.reply(503, b'', headers=[('Retry-After', '3600')])
    waits.clear()
    with pytest.raises(DownloadError, match='http 503') as e: fetch_bytes(srv.url + '/later.jpg', **FETCH | dict(timeout=1, retries=2), max_wait=0.3)
    assert e.value.kind == Failure.BUSY and waits == [0.3, 0.3] and srv.received['/later.jpg'] == 3  # waited 0.3 s twice, not an hour
    srv.reset(); waits.clear()
    with pytest.raises(DownloadError, match='http 503'): fetch_bytes(srv.url + '/later.jpg', **FETCH | dict(timeout=1, deadline=1), max_wait=5)
    assert waits == [] and srv.received['/later.jpg'] == 1  # waiting 5 s would pass the 1 s deadline: gave up at once

def stored(tmp_path, data, **kw):
    out, ext, info = load_image(data, **kw)
    return Image.open(io.BytesIO(out)), ext, info

def test_conversions(tmp_path):
    im, ext, info = stored(tmp_path, cmyk_jpeg())
    assert (im.mode, ext, info['note']) == ('RGB', '.jpg', 'converted CMYK to RGB')
    r, g, b = im.getpixel((60, 45)); assert r > 200 and g < 60 and b < 60
    im, ext, info = stored(tmp_path, png16())
    assert (im.mode, ext, info['note']) == ('L', '.jpg', 'converted I;16 to 8-bit')
    assert abs(im.getpixel((100, 45)) - 128) <= 2 and im.getpixel((10, 45)) >= 253  # scaled, not clipped to white
    im, ext, info = stored(tmp_path, palette_transparent())
    assert info['note'] == 'converted P to RGB, transparent parts made white'
    assert im.getpixel((10, 45)) == (255, 255, 255) and im.getpixel((100, 45))[2] > 240
    im, ext, info = stored(tmp_path, exif_rotated())
    assert im.size == (80, 120) and info['note'] == 'turned upright (EXIF orientation 6)'
    r, g, b = im.getpixel((70, 10)); assert r > 200 and g < 80  # the red corner is now top-right
    im, ext, info = stored(tmp_path, animated_gif())
    assert info['note'].startswith('animated: kept the first frame') and ext == '.jpg'
    r, g, b = im.convert('RGB').getpixel((50, 40)); assert r > 200 and g < 60 and b < 60
    big = enc(photo(7, (1000, 800)))
    im, ext, info = stored(tmp_path, big)
    assert im.size == (400, 320) and (info['width'], info['height']) == (400, 320) and info['note'] == 'shrunk from 1000x800'
    out, ext, info = load_image(big, shrink=0)
    assert out == big and info['note'] == ''  # nothing to change: stored byte for byte
    out, ext, info = load_image(enc(photo(7), 'PNG'))
    assert ext == '.png' and Image.open(io.BytesIO(out)).format == 'PNG'  # the extension comes from the content
    with pytest.raises(ImageError, match='not an image: ICO files are not used'): load_image(enc(photo(8, (64, 64)), 'ICO'))
    with pytest.raises(ImageError, match='not an image: text') as e: load_image(b'{"error": "rate limited"}')
    assert e.value.kind == Failure.NOT_IMAGE

# ---------------------------------------------------------------- gather: manifest, duplicates, resume

def url_file(tmp_path, name, urls):
    f = tmp_path/f'urls_{name}.txt'; f.write_text('\n'.join(urls) + '\n'); return f

def test_duplicates_within_and_across_classes(srv, tmp_path):
    big = enc(photo(10, (320, 240)))
    srv.add('/small.jpg', enc(Image.open(io.BytesIO(big)).resize((160, 120))))
    srv.add('/big.jpg', big); srv.add('/big-again.jpg', big)
    srv.add('/other.jpg', enc(photo(11))); srv.add('/shared.jpg', enc(photo(12)))
    a = url_file(tmp_path, 'a', [srv.url + p for p in ['/small.jpg', '/big.jpg', '/big-again.jpg', '/other.jpg', '/shared.jpg']])
    b = url_file(tmp_path, 'b', [srv.url + '/shared.jpg', srv.url + '/other.jpg?copy'])
    dest = tmp_path/'ds'
    rep = gather(dest, {'a': a, 'b': b}, progress=False, timeout=1)
    rows = by_url(consistent(dest), srv.url)
    big_file = rows['/big.jpg']['file']
    assert rows['/small.jpg']['status'] == 'dropped' and rows['/small.jpg']['reason'].startswith(f'near duplicate: of {big_file} (distance ')
    assert rows['/big-again.jpg']['reason'] == f'duplicate: same picture as {big_file}'
    assert rows['/big-again.jpg']['sha'] == rows['/big.jpg']['sha']
    assert sorted(p.name for p in (dest/'a').iterdir()) == sorted([big_file[2:], rows['/other.jpg']['file'][2:], rows['/shared.jpg']['file'][2:]])
    shared = [r for r in rep.rows if r['url'].endswith('/shared.jpg')]
    assert [r['status'] for r in shared] == ['kept', 'kept']
    assert shared[0]['cross_class'] == f"{shared[1]['file']} (distance 0)"
    assert len(rep.cross_class) == 4  # shared.jpg and other.jpg are each in both classes
    assert srv.served['/shared.jpg'] == 1 and srv.served['/other.jpg'] == 2  # one URL in two classes is fetched once
    assert rep.counts() == {'a': {'found': 5, 'kept': 3, 'duplicates': 2}, 'b': {'found': 2, 'kept': 2, 'duplicates': 0}}
    # hashes: copies are close, different pictures far
    d = hash_distances([rows['/big.jpg']['phash'], rows['/small.jpg']['phash'], rows['/other.jpg']['phash']])
    assert d[0, 1] <= 6 and d[0, 2] > 12

def test_manifest_columns_and_report(srv, tmp_path):
    body = enc(photo(20, (900, 600)))
    srv.add('/ok.jpg', body); srv.routes['/gone.jpg'] = lambda h: h.reply(404)
    dest = tmp_path/'ds'
    rep = gather(dest, {'x': url_file(tmp_path, 'x', [srv.url + '/ok.jpg', srv.url + '/gone.jpg']),
                        'y': url_file(tmp_path, 'y', [srv.url + '/ok.jpg?2'])}, progress=False, timeout=1)
    header = (dest/'manifest.csv').read_text().splitlines()[0].split(',')
    assert header == M.MANIFEST_FIELDS
    ok = by_url(rep.rows, srv.url)['/ok.jpg']
    assert (ok['source'], ok['query'], ok['status'], ok['width'], ok['height'], ok['note']) == ('urls', 'urls_x.txt', 'kept', 400, 267, 'shrunk from 900x600')
    assert ok['file'] == f"x/{ok['sha'][:16]}.jpg" and len(ok['sha']) == 64 and len(ok['phash']) == 16
    assert ok['bytes'] == len(body)
    assert read_manifest(dest) == rep.rows
    text = repr(rep)
    assert re.search(r'^\s+class\s+found\s+kept\s+duplicates\s+http 404$', text, re.M), text
    assert re.search(r'^\s+x\s+2\s+1\s+0\s+1$', text, re.M) and re.search(r'^\s+y\s+1\s+1\s+0\s+0$', text, re.M), text
    assert 'manifest.csv' in text and '2 pictures kept in 2 classes' in text
    df = rep.summary()
    assert list(df.columns) == ['found', 'kept', 'duplicates', 'http 404'] and df.loc['x', 'http 404'] == 1

def test_resume_fetches_nothing_twice_and_retries_only_passing_failures(srv, tmp_path):
    for i in range(5): srv.add(f'/p{i}.jpg', enc(photo(30 + i)))
    srv.routes['/gone.jpg'] = lambda h: h.reply(404)
    srv.add('/page.jpg', HTML)
    flaky = {'ok': False}
    srv.routes['/flaky.jpg'] = lambda h: h.reply(200, enc(photo(40))) if flaky['ok'] else h.reply(503, b'', headers=[('Retry-After', '0')])
    srv.routes['/stall.jpg'] = stall
    urls = [srv.url + p for p in ['/p0.jpg', '/p1.jpg', '/gone.jpg', '/page.jpg', '/flaky.jpg', '/stall.jpg', '/p2.jpg', '/p3.jpg', '/p4.jpg']]
    dest, f = tmp_path/'ds', url_file(tmp_path, 'x', urls)
    r1 = gather(dest, {'x': f}, progress=False, timeout=1, retries=1)
    rows = by_url(consistent(dest), srv.url)
    assert rows['/flaky.jpg']['reason'] == 'http 503' and rows['/stall.jpg']['reason'] == 'timeout: no answer within 1 s'
    assert r1.counts()['x'] == {'found': 9, 'kept': 5, 'duplicates': 0, 'http 404': 1, 'not an image': 1, 'http 503': 1, 'timeout': 1}
    first = dict(srv.received)
    flaky['ok'] = True
    r2 = gather(dest, {'x': f}, progress=False, timeout=1, retries=1)
    new = {p: srv.received[p] - first.get(p, 0) for p in srv.received if srv.received[p] != first.get(p, 0)}
    assert new == {'/flaky.jpg': 1, '/stall.jpg': 1}  # only the passing failures were tried again
    assert r2.fetched == 2 and r2.counts()['x']['kept'] == 6
    rows2 = by_url(consistent(dest), srv.url)
    assert all(rows2[p] == rows[p] for p in ['/p0.jpg', '/p4.jpg', '/gone.jpg', '/page.jpg'])

def test_deleted_pictures_are_not_fetched_again(srv, tmp_path):
    for i in range(3): srv.add(f'/p{i}.jpg', enc(photo(50 + i)))
    dest, f = tmp_path/'ds', url_file(tmp_path, 'x', [srv.url + f'/p{i}.jpg' for i in range(3)])
    rep = gather(dest, {'x': f}, progress=False, timeout=1)
    (dest/rep.kept[1]['file']).unlink()
    srv.reset()
    rep = gather(dest, {'x': f}, progress=False, timeout=1)
    assert srv.received == {} and rep.counts()['x'] == {'found': 3, 'kept': 2, 'duplicates': 0, 'removed': 1}
    consistent(dest)

def test_leftovers_of_a_killed_write_are_cleaned(srv, tmp_path):
    srv.add('/p.jpg', enc(photo(60)))
    dest, f = tmp_path/'ds', url_file(tmp_path, 'x', [srv.url + '/p.jpg'])
    gather(dest, {'x': f}, progress=False, timeout=1)
    (dest/'x'/'.0123456789abcdef.jpg.k2j3h4.part').write_bytes(b'\xff\xd8half')
    (dest/'.manifest.csv.abc.part').write_bytes(b'class,url')
    (dest/'x'/'mine.jpg').write_bytes(enc(photo(61)))  # not ours: left alone, and reported
    rep = gather(dest, {'x': f}, progress=False, timeout=1)
    assert not list(dest.rglob('*.part'))
    assert rep.unknown == [dest/'x'/'mine.jpg'] and (dest/'x'/'mine.jpg').exists()
    assert 'not in the manifest' in repr(rep)

KILL_SCRIPT = '''
import sys
from imgclf.gather import gather
gather(sys.argv[1], {"x": sys.argv[2]}, workers=1, progress=False, timeout=2)
'''

def test_killed_run_resumes_without_fetching_twice(srv, tmp_path):
    n, k = 10, 6
    for i in range(n): srv.add(f'/k{i}.jpg', enc(photo(70 + i)))
    state = {}
    ok = srv.routes[f'/k{k}.jpg']
    def killer(h):
        if 'killed' not in state:
            state['killed'] = True
            os.kill(state['pid'], signal.SIGKILL); return
        ok(h)
    srv.routes[f'/k{k}.jpg'] = killer
    dest, f = tmp_path/'ds', url_file(tmp_path, 'x', [srv.url + f'/k{i}.jpg' for i in range(n)])
    env = dict(os.environ, IMGCLF_HOME=str(tmp_path/'home'))
    p = subprocess.Popen([sys.executable, '-c', KILL_SCRIPT, str(dest), str(f)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    state['pid'] = p.pid
    assert p.wait(timeout=60) == -signal.SIGKILL, p.stderr.read().decode()
    assert (dest/'.manifest.journal').exists()  # finished rows were journaled, not lost
    assert len(list((dest/'x').glob('*.jpg'))) == k
    rep = gather(dest, {'x': f}, progress=False, timeout=2)
    rows = consistent(dest)
    assert [r['status'] for r in rows] == ['kept'] * n and rep.fetched == n - k
    assert all(srv.served[f'/k{i}.jpg'] == 1 for i in range(n)), srv.served  # nothing downloaded twice
    assert srv.received[f'/k{k}.jpg'] == 2  # the request the kill interrupted was never answered

def test_failure_to_write_mid_run_leaves_a_consistent_dataset(srv, tmp_path, monkeypatch):
    "A full disk halfway stops the run with a clear message; what was stored is kept, and the next run finishes the rest"
    n = 12
    for i in range(n): srv.add(f'/e{i}.jpg', enc(photo(90 + i)))
    dest, f = tmp_path/'ds', url_file(tmp_path, 'x', [srv.url + f'/e{i}.jpg' for i in range(n)])
    calls, real = {"n": 0}, D.atomic_write_bytes
    def full_disk(path, data):
        calls['n'] += Path(path).name != 'manifest.csv'
        if calls['n'] == 5 and Path(path).name != 'manifest.csv': raise OSError(28, 'No space left on device')
        return real(path, data)
    monkeypatch.setattr(D, "atomic_write_bytes", full_disk)
    with pytest.raises(ImgclfError, match='No space left on device; the pictures gathered so far are kept'):
        gather(dest, {'x': f}, progress=False, timeout=1, workers=3)
    rows = consistent(dest)
    done = [r for r in rows if r['status'] == 'kept']
    assert len(done) >= 4 and {r['status'] for r in rows} <= {'kept', 'pending'}, [r['reason'] for r in rows]
    monkeypatch.setattr(D, "atomic_write_bytes", real)
    rep = gather(dest, {'x': f}, progress=False, timeout=1)
    consistent(dest)
    assert rep.counts()['x'] == {'found': n, 'kept': n, 'duplicates': 0}
    assert all(srv.served[r['url'].removeprefix(srv.url)] == 1 for r in done)  # what was stored is not fetched again

def test_an_unexpected_error_drops_one_candidate_not_the_run(srv, tmp_path, monkeypatch):
    n = 6
    for i in range(n): srv.add(f'/u{i}.jpg', enc(photo(190 + i)))
    dest, f = tmp_path/'ds', url_file(tmp_path, 'x', [srv.url + f'/u{i}.jpg' for i in range(n)])
    real = D.load_image
    def flaky_load(data, **kw):
        if hashlib.sha256(data).hexdigest() == hashlib.sha256(enc(photo(192))).hexdigest(): raise RuntimeError('a bug')
        return real(data, **kw)
    monkeypatch.setattr(D, "load_image", flaky_load)
    rep = gather(dest, {'x': f}, progress=False, timeout=1, workers=3)
    rows = by_url(consistent(dest), srv.url)
    assert rows['/u2.jpg']['status'] == 'dropped' and rows['/u2.jpg']['reason'] == 'error: RuntimeError: a bug'
    assert len(rep.kept) == n - 1 and not any(r['status'] == 'pending' for r in rep.rows)

def test_own_folder_is_copied_not_touched(srv, tmp_path):
    mine = tmp_path/'my photos'; (mine/'trip').mkdir(parents=True)
    enc_files = {'a.JPG': enc(photo(100, (800, 600))), 'trip/b.png': enc(photo(101), 'PNG'), 'notes.txt': b'hello',
                 'cmyk.jpg': cmyk_jpeg(), '.DS_Store': b'\x00\x00'}
    for n, b in enc_files.items(): (mine/n).write_bytes(b)
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in mine.rglob('*') if p.is_file()}
    dest = tmp_path/'ds'
    rep = gather(dest, {'mine': mine, 'web': url_file(tmp_path, 'w', [srv.add('/w.jpg', enc(photo(102)))])}, progress=False)
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in mine.rglob('*') if p.is_file()} == before
    rows = {Path(r['url']).name: r for r in rep.rows if r['source'] == 'folder'}
    assert sorted(rows) == ['a.JPG', 'b.png', 'cmyk.jpg', 'notes.txt']  # hidden files skipped
    assert rows['notes.txt']['reason'] == 'not an image: unknown format'
    assert rows['a.JPG']['note'] == 'shrunk from 800x600' and rows['cmyk.jpg']['note'] == 'converted CMYK to RGB'
    assert rows['b.png']['file'].endswith('.png')
    consistent(dest)
    srv.reset()
    rep2 = gather(dest, {'mine': mine, 'web': tmp_path/'urls_w.txt'}, progress=False)
    assert rep2.fetched == 0 and srv.received == {}

def test_bad_requests_are_refused_before_downloading(tmp_path):
    (tmp_path/'pics').mkdir(); (tmp_path/'empty').mkdir()
    (tmp_path/'pics'/'a.jpg').write_bytes(enc(photo(1)))
    cases = [({}, 'at least one class'),
             ({'x': tmp_path/'missing.txt'}, f"Source for class 'x' not found: {tmp_path/'missing.txt'}"),
             ({'x': 'urls_missing.txt'}, 'not found'),
             ({'x': tmp_path/'empty'}, f"Source folder {tmp_path/'empty'} for class 'x' holds no files"),
             ({'../x': 'bears'}, "Class name '../x' cannot be used"), ({'.x': 'bears'}, "Class name '.x' cannot be used"),
             ({'x': ''}, 'empty source'), ({'x': 3}, 'source')]
    for classes, msg in cases:
        with pytest.raises(ImgclfError, match=None) as e: gather(tmp_path/'ds', classes, progress=False)
        assert msg in str(e.value), (classes, str(e.value))
    with pytest.raises(ImgclfError, match='overlaps the dataset folder'): gather(tmp_path/'pics'/'ds', {'x': tmp_path/'pics'})
    (tmp_path/'file').write_text('x')
    with pytest.raises(ImgclfError, match='dataset folder is a file'): gather(tmp_path/'file', {'x': tmp_path/'pics'})
    with pytest.raises(ImgclfError, match="search must be 'ddgs' or 'commons'"): gather(tmp_path/'ds', {'x': 'bear'}, search='bing')
    assert not (tmp_path/'ds').exists()  # nothing was started
    with pytest.raises(ImgclfError, match='Manifest not found'): read_manifest(tmp_path)

def test_gather_from_searches_with_licences(srv, tmp_path):
    "ddgs and Commons answers (recorded), with every image address moved to the local server"
    a, b, c, d = (enc(photo(200 + i, (400, 300))) for i in range(4))
    pics = {'GrizzlyBearJeanBeaufort.jpg': a, 'Brown_bear_(Ursus_arctos_alascensis)_eating_salmon.jpg': b,
            'Ursus_arctos_horribilis.jpg': a,  # the same photo on Commons as one found by the web search
            'Grizzly_Bear_Yellowstone.jpg': c, 'Grizzly_Denali_Sept_2019.png': d}
    def local(u): return srv.url + '/ext/' + u.removeprefix('https://')
    ddg = json.loads((FIXTURES/'ddg_images_grizzly.json').read_text())
    for r in ddg['results']: r['image'] = local(r['image'])
    pages = []
    for i in (1, 2):
        j = json.loads((FIXTURES/f'commons_grizzly_{i}.json').read_text())
        for p in j['query']['pages']:
            ii = p['imageinfo'][0]; ii['url'], ii['thumburl'] = local(ii['url']), local(ii['thumburl'])
        pages.append(json.dumps(j).encode())
    srv.routes['/ddg'] = lambda h: h.reply(200, (FIXTURES/'ddg_home.html').read_bytes(), ctype='text/html')
    srv.routes['/ddg/i.js'] = lambda h: h.reply(200, json.dumps(ddg).encode(), ctype='application/json')
    srv.routes['/w/api.php'] = lambda h: h.reply(200, pages['gsroffset' in h.path], ctype='application/json')
    def ext(h):  # upload.wikimedia.org has the files it should; the other sites are down
        host, _, rest = urlparse(h.path).path.removeprefix('/ext/').partition('/')
        name = unquote(rest.rsplit('/', 1)[-1]).removeprefix('400px-')
        if host == 'upload.wikimedia.org' and name in pics: return h.reply(200, pics[name])
        h.reply(404, b'')
    srv.routes['/ext/*'] = ext
    dest, classes = tmp_path/'bears', {'grizzly': ['grizzly bear', 'commons:grizzly bear']}
    kw = dict(progress=False, timeout=1, ddg_url=srv.url + '/ddg', commons_url=srv.url + '/w/api.php')
    rep = gather(dest, classes, **kw)
    rows = consistent(dest)
    web, cc = [r for r in rows if r['source'] == 'ddgs'], [r for r in rows if r['source'] == 'commons']
    assert len(web) == 6 and len(cc) == 3
    assert {r['query'] for r in web} == {'grizzly bear'}  # every variant gave the same results; the first query is recorded
    assert [r['reason'] for r in web if r['status'] == 'dropped'].count('http 404') == 4
    assert [(r['licence'], r['author'], r['status']) for r in cc] == [
        ('CC BY-SA 3.0', 'Jean-Pierre Lavoie', 'kept'), ('Public domain', 'Jim Peaco, National Park Service', 'kept'),
        ('CC BY 2.0', 'Denali National Park and Preserve from Denali Park, United States', 'kept')]
    assert cc[0]['source_page'] == 'https://commons.wikimedia.org/wiki/File:Ursus_arctos_horribilis.jpg'
    # the web-search copy of the Commons photo is the duplicate: the copy whose licence we know is kept
    assert web[0]['reason'] == f"duplicate: same picture as {cc[0]['file']}"
    assert rep.counts() == {'grizzly': {'found': 9, 'kept': 4, 'duplicates': 1, 'http 404': 4}}
    assert all(h.startswith('/ext/') or h in ('/ddg', '/ddg/i.js', '/w/api.php') for h in srv.received)
    srv.reset()
    gather(dest, classes, **kw)
    assert srv.received == {}  # searched once and remembered; nothing to download again

def test_failed_search_is_reported_not_fatal(srv, tmp_path):
    srv.routes['/ddg'] = lambda h: h.reply(500, b'', ctype='text/html')
    srv.add('/p.jpg', enc(photo(1)))
    rep = gather(tmp_path/'ds', {'bear': 'bear', 'cat': url_file(tmp_path, 'c', [srv.url + '/p.jpg'])}, progress=False,
                 ddg_url=srv.url + '/ddg', variants=['{term}'])
    assert rep.errors == [('bear', f"ddgs 'bear': {srv.url}/ddg answered HTTP 500")]
    assert "search failed for 'bear'" in repr(rep) and rep.counts() == {'cat': {'found': 1, 'kept': 1, 'duplicates': 0}}
    srv.routes['/ddg2'] = lambda h: h.reply(200, (FIXTURES/'ddg_home.html').read_bytes(), ctype='text/html')
    srv.routes['/ddg2/i.js'] = lambda h: h.reply(200, b'{"results": []}', ctype='application/json')
    rep = gather(tmp_path/'ds2', {'bear': 'bear'}, progress=False, ddg_url=srv.url + '/ddg2', variants=['{term}'])
    assert rep.errors == [('bear', "ddgs 'bear': no results")] and rep.rows == []

def test_rebuild_from_manifest(srv, tmp_path):
    for i in range(4): srv.add(f'/r{i}.jpg', enc(photo(300 + i, (600, 450))))
    srv.routes['/gone.jpg'] = lambda h: h.reply(404)
    dest = tmp_path/'ds'
    rep = gather(dest, {'x': url_file(tmp_path, 'x', [srv.url + f'/r{i}.jpg' for i in range(2)] + [srv.url + '/gone.jpg']),
                        'y': url_file(tmp_path, 'y', [srv.url + f'/r{i}.jpg' for i in range(2, 4)])}, progress=False, timeout=1)
    shutil_copy = (dest/'manifest.csv').read_bytes()
    (tmp_path/'m.csv').write_bytes(shutil_copy)
    srv.reset()
    new = rebuild(tmp_path/'m.csv', tmp_path/'again', progress=False, timeout=1)
    assert '/gone.jpg' not in srv.received and sum(srv.served.values()) == 4
    consistent(tmp_path/'again')
    assert sorted(r['file'] for r in new.kept) == sorted(r['file'] for r in rep.kept)
    assert all((dest/r['file']).read_bytes() == (tmp_path/'again'/r['file']).read_bytes() for r in new.kept)
    srv.add('/r0.jpg', enc(photo(999, (600, 450))))  # the picture at this address has changed
    new = rebuild(tmp_path/'m.csv', tmp_path/'third', progress=False, timeout=1)
    assert by_url(new.rows, srv.url)['/r0.jpg']['reason'].startswith("changed: the file's SHA-256 starts")
    with pytest.raises(ImgclfError, match='another folder'): rebuild(dest, dest)

def test_progress_is_shown_in_a_log(srv, tmp_path, capsys):
    "Not in a terminal (a log, a CI job): a line at every tenth of the way, and none when asked for none"
    urls = [srv.add(f'/p{i}.jpg', enc(photo(500 + i))) for i in range(20)]
    recs = download_images(urls, tmp_path/'d', progress=True)
    assert [r['status'] for r in recs] == ['kept'] * 20
    lines = capsys.readouterr().out.splitlines()
    assert [l.split(' candidates done')[0] for l in lines] == [f'{i}/20' for i in range(2, 21, 2)], lines
    assert all(re.fullmatch(r'\d+/20 candidates done \(\d+ s\)', l) for l in lines), lines
    download_images(urls, tmp_path/'e', progress=False)
    assert capsys.readouterr().out == ''

def test_dedupe_exact_only_and_keeps_largest():
    h = 'f0f0f0f0f0f0f0f0'
    near = 'f0f0f0f0f0f0f0f1'
    rows = [dict(status='kept', reason='', file=f, sha=f, phash=p, width=w, height=w, bytes=1, cross_class='', **{'class': 'c'})
            for f, p, w in [('c/small', near, 100), ('c/big', h, 300)]]
    assert dedupe([dict(r) for r in rows], max_distance=-1) == []
    rs = [dict(r) for r in rows]; dedupe(rs)
    assert [r['status'] for r in rs] == ['dropped', 'kept'] and rs[0]['reason'] == 'near duplicate: of c/big (distance 1)'

def test_dedupe_across_classes_in_blocks():
    rng = np.random.default_rng(0)
    hs = [f'{int(x):016x}' for x in rng.integers(0, 2**63, 1100, dtype=np.int64)]
    hs[1090] = hs[5][:-1] + ('0' if hs[5][-1] != '0' else '1')  # within a few bits of picture 5
    rows = [dict(status='kept', reason='', file=f'{"a" if i < 600 else "b"}/{i}', sha=str(i), phash=h, width=10, height=10,
                 bytes=1, cross_class='', **{'class': 'a' if i < 600 else 'b'}) for i, h in enumerate(hs)]
    pairs = dedupe(rows)
    assert pairs == [('a/5', 'b/1090', int(hash_distances([hs[5]], [hs[1090]])[0, 0]))]
    assert rows[5]['cross_class'].startswith('b/1090 (distance ') and rows[1090]['cross_class'].startswith('a/5 (distance ')
    assert sum(r['status'] == 'kept' for r in rows) == 1100

def test_command_line_gather(srv, tmp_path, capsys):
    "`imgclf gather` passes plain arguments through to `gather`"
    from imgclf.cli import run
    srv.add('/big.jpg', enc(photo(400, (900, 600)))); srv.routes['/gone.jpg'] = lambda h: h.reply(404)
    f = url_file(tmp_path, 'x', [srv.url + '/big.jpg', srv.url + '/gone.jpg'])
    g = url_file(tmp_path, 'y', [srv.url + '/big.jpg?y'])
    rep = run(['gather', str(tmp_path/'ds'), '--class', f'x={f}', '--class', f'y={g}', '--shrink', '0'])
    assert [(r['status'], r['width']) for r in rep.rows] == [('kept', 900), ('dropped', None), ('kept', 900)]
    assert '2 pictures kept in 2 classes' in capsys.readouterr().out
    consistent(tmp_path/'ds')
