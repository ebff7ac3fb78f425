"Gather against hostile servers and hostile datasets: nothing written or deleted outside the dataset, no crash, no hang"
import csv, hashlib, io, json, os, shutil, signal, socket, ssl, stat, subprocess, sys, threading, time, zlib

import numpy as np
import pytest
from PIL import Image, TiffImagePlugin

import imgclf.gather as G, imgclf.images as I, imgclf.manifest as M, imgclf.search as S
from imgclf.core import ImgclfError
from imgclf.gather import gather, rebuild
from imgclf.images import load_image
from imgclf.manifest import read_manifest
from imgclf.download import is_transient
from test_gather import Server, srv, photo, enc, url_file, consistent  # noqa: F401 (srv is a fixture)


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv('IMGCLF_HOME', str(tmp_path/'home'))

QUICK = dict(progress=False, timeout=1, deadline=3)

# ---------------------------------------------------------------- a raw TCP server, for what http.server cannot do

class RawServer:
    "Accepts connections on 127.0.0.1 and hands each socket to `behave(conn, stop)` in its own thread"
    def __init__(self, behave):
        self.stop, self.behave = threading.Event(), behave
        self.accepted, self.hung_up, self.changed = 0, 0, threading.Condition()  # connections, and those the client shut
        self.sock = socket.socket(); self.sock.bind(('127.0.0.1', 0)); self.sock.listen(64); self.sock.settimeout(0.1)
        self.url = f'http://127.0.0.1:{self.sock.getsockname()[1]}'
        threading.Thread(target=self._accept, daemon=True).start()
    def _accept(self):
        while not self.stop.is_set():
            try: c, _ = self.sock.accept()
            except OSError: continue
            with self.changed: self.accepted += 1; self.changed.notify_all()
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()
    def _serve(self, c):
        try:
            c.recv(65536)
            self.behave(c, self.stop)
        except OSError:  # the client shut the connection while this server still had more to send
            if not self.stop.is_set():
                with self.changed: self.hung_up += 1; self.changed.notify_all()
        finally: c.close()
    def wait(self, what, timeout=60):
        "Wait until `what()` holds (a guard against a hang, not a measure of speed)"
        with self.changed: return self.changed.wait_for(what, timeout)
    def close(self): self.stop.set(); self.sock.close()

def header_dribble(c, stop):
    "One byte of the status line a second, forever"
    for b in b'HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\n' * 100:
        if stop.wait(0.5): return
        c.sendall(bytes([b]))

def endless_headers(c, stop):
    "A new header every half second, never the blank line that ends them"
    c.sendall(b'HTTP/1.1 200 OK\r\n')
    for i in range(1000):
        if stop.wait(0.5): return
        c.sendall(f'X-Wait-{i}: {i}\r\n'.encode())

def gzip_of_nothing(c, stop):
    "A gzip body that keeps coming and inflates to nothing"
    c.sendall(b'HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n')
    z = zlib.compressobj(wbits=31)
    first = z.compress(b'') + z.flush(zlib.Z_SYNC_FLUSH)
    c.sendall(b'%x\r\n%s\r\n' % (len(first), first))
    for _ in range(1000):
        if stop.wait(0.2): return
        part = b'\x00\x00\x00\xff\xff'  # an empty stored block: five bytes that decode to nothing
        c.sendall(b'%x\r\n%s\r\n' % (len(part), part))

def many_headers(c, stop):
    c.sendall(b'HTTP/1.1 200 OK\r\n' + b''.join(b'X-%d: 1\r\n' % i for i in range(500)) + b'Content-Length: 3\r\n\r\nabc')

def long_header(c, stop):
    c.sendall(b'HTTP/1.1 200 OK\r\nX-Long: ' + b'a' * 200_000 + b'\r\nContent-Length: 3\r\n\r\nabc')

@pytest.fixture
def raw():
    servers = []
    def make(behave): s = RawServer(behave); servers.append(s); return s.url + '/x.jpg'
    make.servers = servers
    yield make
    for s in servers: s.close()

# ---------------------------------------------------------------- 1. the manifest is untrusted input

def _manifest(dest, rows):
    fields = M.MANIFEST_FIELDS
    with open(dest/'manifest.csv', 'w', newline='') as f:
        w = csv.DictWriter(f, fields); w.writeheader()
        for r in rows: w.writerow({k: r.get(k, '') for k in fields})

def _kept(c, file, sha, phash='c3c3c3c3c3c3c3c3', url=None):
    return {'class': c, 'source': 'urls', 'query': 'urls_x.txt', 'url': url or f'http://example.com/{file}', 'status': 'kept',
            'file': file, 'sha': sha, 'phash': phash, 'width': 100, 'height': 100, 'bytes': 10}

def test_a_manifest_cannot_delete_outside_the_dataset(srv, tmp_path):
    "The reproduction: a shared dataset whose manifest names ../victim.txt as a duplicate"
    ds = tmp_path/'ds'; (ds/'x').mkdir(parents=True)
    (ds/'x'/'aaaaaaaaaaaaaaaa.jpg').write_bytes(b'd')
    victim = tmp_path/'victim.txt'; victim.write_text('precious')
    sha = 'a' * 64
    _manifest(ds, [_kept('x', 'x/aaaaaaaaaaaaaaaa.jpg', sha), _kept('x', '../victim.txt', 'b' * 64)])
    f = url_file(tmp_path, 'x', [srv.add('/a.jpg', enc(photo(1)))])
    with pytest.raises(ImgclfError) as e: gather(ds, {'x': f}, **QUICK)
    assert "manifest.csv, row 3: file '../victim.txt' is not a picture gather stores for class 'x'" in str(e.value)
    assert victim.read_text() == 'precious' and srv.received == {}  # refused before anything else happened

@pytest.mark.parametrize('row, msg', [
    (dict(_kept('..', '../aaaaaaaaaaaaaaaa.jpg', 'a' * 64)), "Class name '..' cannot be used"),
    (dict(_kept('/tmp/abs', '/tmp/abs/aaaaaaaaaaaaaaaa.jpg', 'a' * 64)), "Class name '/tmp/abs' cannot be used"),
    (dict(_kept('x', 'x/../../victim.txt', 'a' * 64)), "file 'x/../../victim.txt' is not a picture"),
    (dict(_kept('x', '/etc/passwd', 'a' * 64)), "file '/etc/passwd' is not a picture"),
    (dict(_kept('x', 'y/aaaaaaaaaaaaaaaa.jpg', 'a' * 64)), "is not a picture gather stores for class 'x'"),
    (dict(_kept('x', 'x/aaaaaaaaaaaaaaaa.jpg', 'a' * 64), status='gone'), 'status is'),
    (dict(_kept('x', 'x/aaaaaaaaaaaaaaaa.jpg', 'a' * 64), width='wide'), "width is 'wide', not a number"),
    (dict(_kept('x', 'x/aaaaaaaaaaaaaaaa.jpg', '../../x')), 'is not a SHA-256'),
])
def test_every_manifest_row_is_checked(tmp_path, row, msg):
    ds = tmp_path/'ds'; ds.mkdir(); (tmp_path/'notes').write_text('mine')
    _manifest(ds, [row])
    with pytest.raises(ImgclfError, match='manifest.csv, row 2: ') as e: read_manifest(ds)
    assert msg in str(e.value)
    with pytest.raises(ImgclfError): gather(ds, {'x': 'ddg:cats'}, **QUICK)
    with pytest.raises(ImgclfError): rebuild(ds, tmp_path/'escaped', **QUICK)
    assert (tmp_path/'notes').read_text() == 'mine' and not (tmp_path/'escaped').exists()

def test_the_journal_is_checked_too(tmp_path):
    ds = tmp_path/'ds'; ds.mkdir(); (tmp_path/'notes').write_text('mine')
    (ds/'.manifest.journal').write_text(json.dumps(dict(_kept('..', 'notes', 'a' * 64), status='dropped')) + '\n')
    with pytest.raises(ImgclfError, match=r'\.manifest\.journal, line 1: .*Class name'): gather(ds, {'x': 'ddg:cats'}, **QUICK)
    assert (tmp_path/'notes').read_text() == 'mine'

def test_a_file_the_manifest_did_not_store_is_never_deleted(srv, tmp_path):
    "Two kept rows that are duplicates of each other, but the file of the second is no longer what gather stored there"
    ds = tmp_path/'ds'; (ds/'x').mkdir(parents=True)
    a, b = enc(photo(1, (300, 200))), enc(photo(1))
    ha, hb = hashlib.sha256(a).hexdigest(), hashlib.sha256(b).hexdigest()
    (ds/'x'/f'{ha[:16]}.jpg').write_bytes(a)
    (ds/'x'/f'{hb[:16]}.jpg').write_bytes(b'my own notes, saved over the picture')
    _manifest(ds, [_kept('x', f'x/{ha[:16]}.jpg', ha), _kept('x', f'x/{hb[:16]}.jpg', hb)])
    rep = gather(ds, {'x': url_file(tmp_path, 'x', [srv.add('/c.jpg', enc(photo(50)))])}, **QUICK)
    assert (ds/'x'/f'{hb[:16]}.jpg').read_bytes() == b'my own notes, saved over the picture'  # dropped as a duplicate, not deleted
    assert [f.name for f in rep.unknown] == [f'{hb[:16]}.jpg']

def test_a_class_folder_that_links_outside_is_refused(srv, tmp_path):
    ds = tmp_path/'ds'; ds.mkdir(); outside = tmp_path/'outside'; outside.mkdir()
    (ds/'x').symlink_to(outside)
    with pytest.raises(ImgclfError, match='is a link to'): gather(ds, {'x': url_file(tmp_path, 'x', [srv.add('/a.jpg', enc(photo(1)))])}, **QUICK)
    assert list(outside.iterdir()) == [] and srv.received == {}

def test_a_class_named_like_a_file_of_the_dataset(srv, tmp_path):
    ds = tmp_path/'ds'
    f = url_file(tmp_path, 'x', [srv.add('/a.jpg', enc(photo(1)))])
    gather(ds, {'x': f}, **QUICK)
    (ds/'notes.txt').write_text('mine')
    for c in ['manifest.csv', 'notes.txt']:
        with pytest.raises(ImgclfError, match=f"Class '{c}' cannot be used: .* is a file of the dataset folder"): gather(ds, {c: f}, **QUICK)
    with pytest.raises(ImgclfError, match="Class 'manifest.csv' cannot be used"): gather(tmp_path/'new', {'manifest.csv': f}, **QUICK)
    assert (ds/'notes.txt').read_text() == 'mine'
    consistent(ds)

# ---------------------------------------------------------------- 2. one bad URL or header drops one candidate, never the run

def test_bad_urls_and_headers_are_dropped_and_the_run_goes_on(srv, tmp_path):
    srv.add('/ok.jpg', enc(photo(1)))
    srv.routes['/to-bad-ipv6'] = lambda h: h.reply(302, b'', headers=[('Location', 'http://[::1/x.jpg')])
    srv.routes['/to-file'] = lambda h: h.reply(302, b'', headers=[('Location', 'file:///etc/passwd')])
    srv.routes['/retry-after'] = lambda h: h.reply(503, b'', headers=[('Retry-After', '\u00b2')])
    srv.routes['/length'] = lambda h: h.reply(200, enc(photo(2)), length='\u00b2')
    paths = ['/ok.jpg', '/to-bad-ipv6', '/to-file', '/retry-after', '/length']
    urls = ['http://example..com/cat.jpg'] + [srv.url + p for p in paths]
    ds = tmp_path/'ds'
    gather(ds, {'x': url_file(tmp_path, 'x', urls)}, **QUICK, retries=1)
    rows = {r['url']: r for r in consistent(ds)}
    assert all(r['status'] != 'pending' for r in rows.values())
    assert rows['http://example..com/cat.jpg']['reason'].startswith('bad url: http://example..com/cat.jpg')
    assert rows[srv.url + '/to-bad-ipv6']['reason'].startswith('bad redirect')
    assert rows[srv.url + '/to-file']['reason'] == 'bad url: file:///etc/passwd'
    assert rows[srv.url + '/retry-after']['reason'] == 'http 503' and srv.received['/retry-after'] == 2
    assert rows[srv.url + '/ok.jpg']['status'] == 'kept'
    # a Content-Length that is not a number: where the body ends cannot be known, so HTTP says give up (RFC 9112, 6.3)
    assert (rows[srv.url + '/length']['status'], rows[srv.url + '/length']['kind']) == ('dropped', 'bad_response')
    assert rows[srv.url + '/length']['reason'] == 'bad response: a Content-Length that is not one number (\u00b2)'
    srv.reset()
    gather(ds, {'x': tmp_path/'urls_x.txt'}, **QUICK, retries=1)  # the next run retries only what may pass
    assert srv.received == {'/retry-after': 2}

def test_hostile_header_blocks_are_dropped(raw, tmp_path):
    urls = [raw(many_headers), raw(long_header)]
    recs = G.download_images(urls, tmp_path/'dl', progress=False, timeout=2, deadline=5)
    assert [r['status'] for r in recs] == ['dropped', 'dropped'] and all(r['reason'] for r in recs)

# ---------------------------------------------------------------- 3. a wall-clock deadline no server can stretch

def test_the_deadline_holds_whatever_the_server_does(raw, tmp_path):
    urls = [raw(header_dribble), raw(endless_headers), raw(gzip_of_nothing)]
    got = {}
    run = threading.Thread(target=lambda: got.update(recs=G.download_images(urls, tmp_path/'dl', progress=False, timeout=(2, 2),
                                                                            deadline=2, retries=0)), daemon=True)
    run.start()
    # each server would go on sending for many minutes; each sees the client hang up (a guard of 60 s against a hang)
    assert all(s.wait(lambda: s.hung_up == 1) for s in raw.servers), [(s.accepted, s.hung_up) for s in raw.servers]
    run.join(60)
    recs = got['recs']
    assert [r['reason'] for r in recs] == ['timeout: over the 2 s deadline'] * 3, recs
    assert all(is_transient(r['kind']) for r in recs)

INTERRUPT_SCRIPT = '''
import signal, sys
# Ctrl-C as a terminal delivers it: a process started in the background of a non-interactive shell (a CI script
# run with `&`) inherits SIGINT ignored, and would never see the signal this test sends
signal.signal(signal.SIGINT, signal.default_int_handler)
from imgclf.gather import gather
print('start', flush=True)
gather(sys.argv[1], {"x": sys.argv[2]}, progress=False, timeout=(5, 5), deadline=120)
'''

def test_ctrl_c_stops_a_gather_at_once(raw, tmp_path):
    f = url_file(tmp_path, 'x', [raw(header_dribble) + f'?{i}' for i in range(8)] + [raw(gzip_of_nothing)])
    servers = raw.servers  # one per URL
    ds = tmp_path/'ds'
    p = subprocess.Popen([sys.executable, '-c', INTERRUPT_SCRIPT, str(ds), str(f)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=dict(os.environ, IMGCLF_HOME=str(tmp_path/'home')))
    assert p.stdout.readline() == b'start\n'
    assert all(s.wait(lambda: s.accepted == 1) for s in servers)  # all nine downloads are going
    p.send_signal(signal.SIGINT)
    p.wait(timeout=60)  # without the stop, the run would wait for its downloads' 120 s deadline and this would raise
    assert b'KeyboardInterrupt' in p.stderr.read()
    assert {r['status'] for r in consistent(ds)} == {'pending'}  # nothing half-done is recorded

# ---------------------------------------------------------------- 4, 5. bounded memory and CPU per picture

def png16_huge(side=7000):
    im = Image.fromarray(np.zeros((side, side), np.uint16) + 1000)
    return enc(im, 'PNG')

MEMORY_SCRIPT = '''
import re, sys
from pathlib import Path
from imgclf.gather import gather
rep = gather(sys.argv[1], {"x": sys.argv[2]}, progress=False, timeout=10, deadline=120, workers=16)
# VmHWM: this process's own peak. ru_maxrss would also count the parent's memory at the moment it started this
# process (Linux carries the larger of the two across exec), so inside a big test session it reads the session's size.
print(len(rep.kept), int(re.search(r"VmHWM:\\s+(\\d+) kB", Path("/proc/self/status").read_text()).group(1)) // 1024)
'''

def test_sixteen_bit_giants_stay_within_memory(srv, tmp_path):
    body = png16_huge()
    assert len(body) < 1_000_000
    urls = [srv.add(f'/g{i}.png', body, ctype='image/png') + f'?{i}' for i in range(6)]
    f = url_file(tmp_path, 'x', urls)
    out = subprocess.run([sys.executable, '-c', MEMORY_SCRIPT, str(tmp_path/'ds'), str(f)], capture_output=True, text=True,
                         env=dict(os.environ, IMGCLF_HOME=str(tmp_path/'home')), timeout=300)
    kept, peak_mb = map(int, out.stdout.split())
    assert kept == 1  # six copies of one picture: one kept, five duplicates
    assert peak_mb < 1500, peak_mb  # the target for 200 such URLs; six at once through float64 needed about 7 GB

def test_sixteen_bit_is_converted_without_floating_point():
    a = (np.arange(256 * 64, dtype=np.uint32).reshape(64, 256) * 4).astype(np.uint16)  # 0 .. 65532
    out, ext, info = load_image(enc(Image.fromarray(a), 'PNG'), shrink=0)
    got = np.asarray(Image.open(io.BytesIO(out)).convert('L')).astype(int)
    assert np.abs(got - (a >> 8)).max() <= 2 and info['note'] == 'converted I;16 to 8-bit'

class Watched(threading.Condition):
    "A condition that counts the threads waiting on it, in `waiting` (read under `seen`)"
    def __init__(self): super().__init__(); self.waiting, self.seen = 0, threading.Condition()
    def wait(self, timeout=None):
        with self.seen: self.waiting += 1; self.seen.notify_all()  # still holding the lock: no notify can come before it waits
        try: return super().wait(timeout)
        finally:
            with self.seen: self.waiting -= 1; self.seen.notify_all()

def budget_order(b, guard:float=60):
    "Pictures of 60, 60, 30 and 150 units through budget `b` (100), each let go in turn: who was waiting and who decoding at each step"
    b.cond, inside, go = Watched(), [], {k: threading.Event() for k in 'ABCD'}
    def hold(k, n):
        with b(n):
            with b.cond.seen: inside.append(k); b.cond.seen.notify_all()
            go[k].wait(guard)
        with b.cond.seen: inside.remove(k); b.cond.seen.notify_all()
    def until(what):  # a guard against a hang, not a measure of speed
        with b.cond.seen: assert b.cond.seen.wait_for(what, guard), (inside, b.cond.waiting, b.used)
    ts = {k: threading.Thread(target=hold, args=(k, n), daemon=True) for k, n in dict(A=60, B=60, C=30, D=150).items()}
    ts['A'].start(); until(lambda: inside == ['A'])
    ts['B'].start(); until(lambda: b.cond.waiting == 1)  # 60 + 60 is over 100: B waits
    ts['C'].start(); until(lambda: inside == ['A', 'C'])  # 60 + 30 fits
    ts['D'].start(); until(lambda: b.cond.waiting == 2)  # 150 is more than the whole budget: D waits until nothing else decodes
    steps = [(sorted(inside), b.used)]
    go['A'].set(); until(lambda: sorted(inside) == ['B', 'C'] and b.cond.waiting == 1); steps.append((sorted(inside), b.used))
    go['B'].set(); go['C'].set(); until(lambda: inside == ['D']); steps.append((sorted(inside), b.used))
    go['D'].set(); until(lambda: inside == [])
    for t in ts.values(): t.join(guard)
    return steps + [b.used]

def test_the_decode_budget_bounds_pictures_in_memory_at_once():
    "A picture waits while those decoding leave it too little of the budget; one larger than the whole budget goes alone"
    assert budget_order(I._Budget(100)) == [(['A', 'C'], 90), (['B', 'C'], 90), (['D'], 150), 0]

def test_a_tiff_with_thousands_of_pages_is_not_walked(monkeypatch):
    pages = [Image.new('L', (64, 64), i % 256) for i in range(3000)]
    b = io.BytesIO(); pages[0].save(b, 'TIFF', save_all=True, append_images=pages[1:])
    seeks, real = [0], TiffImagePlugin.TiffImageFile._seek
    def counting(self, frame): seeks[0] += 1; return real(self, frame)
    monkeypatch.setattr(TiffImagePlugin.TiffImageFile, '_seek', counting)
    out, ext, info = load_image(b.getvalue())
    assert info['note'].startswith('animated: kept the first frame') and seeks[0] < 10, seeks

# ---------------------------------------------------------------- 6-9

def test_a_file_name_that_is_not_utf8(tmp_path):
    mine = tmp_path/'mine'; mine.mkdir()
    name = os.fsdecode(b'caf\xe9.jpg')
    (mine/name).write_bytes(enc(photo(3)))
    ds = tmp_path/'ds'
    rep = gather(ds, {'x': mine}, progress=False)
    assert len(rep.kept) == 1 and rep.kept[0]['url'].startswith('file://') and rep.kept[0]['url'].endswith('caf%E9.jpg')
    (ds/'manifest.csv').read_bytes().decode('utf-8')  # still valid UTF-8 (decoding raises if not)
    rep2 = gather(ds, {'x': mine}, progress=False)
    assert rep2.fetched == 0 and len(rep2.kept) == 1
    consistent(ds)

def test_a_class_given_twice_gathers_from_both(srv, tmp_path, capsys):
    from imgclf.cli import run
    a = url_file(tmp_path, 'a', [srv.add('/a.jpg', enc(photo(1)))])
    b = url_file(tmp_path, 'b', [srv.add('/b.jpg', enc(photo(2)))])
    rep = run(['gather', str(tmp_path/'ds'), '--class', f'x={a}', '--class', f'x={b}', '--quiet'])
    assert sorted(r['query'] for r in rep.kept) == ['urls_a.txt', 'urls_b.txt']

def test_a_second_gather_into_the_same_folder_is_refused(raw, srv, tmp_path):
    ds = tmp_path/'ds'
    f = url_file(tmp_path, 'x', [raw(header_dribble)])
    p = subprocess.Popen([sys.executable, '-c', INTERRUPT_SCRIPT, str(ds), str(f)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=dict(os.environ, IMGCLF_HOME=str(tmp_path/'home')))
    try:
        assert p.stdout.readline() == b'start\n'
        assert raw.servers[0].wait(lambda: raw.servers[0].accepted == 1)  # the first gather holds the lock: it is downloading
        g = url_file(tmp_path, 'y', [srv.add('/y.jpg', enc(photo(4)))])
        with pytest.raises(ImgclfError, match=f'Another gather is writing to {ds} now'): gather(ds, {'y': g}, **QUICK)
    finally: p.send_signal(signal.SIGINT); p.wait(timeout=30)
    gather(ds, {'y': g}, **QUICK)  # once the first has ended
    assert {r['class']: r['status'] for r in consistent(ds)} == {'x': 'pending', 'y': 'kept'}

# ---------------------------------------------------------------- the smaller ones

def test_heic_is_named(tmp_path):
    heic = b'\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic' + b'\x00' * 200
    with pytest.raises(I.ImageError, match='HEIC/HEIF photo .* convert it to JPEG') as e: load_image(heic)
    assert e.value.kind == I.Failure.UNSUPPORTED

def test_spreadsheet_formulas_are_written_as_text(srv, tmp_path):
    ds = tmp_path/'ds'
    gather(ds, {'=HYPERLINK("evil.example")': url_file(tmp_path, 'x', [srv.add('/a.jpg', enc(photo(1)))])}, **QUICK)
    text = (ds/'manifest.csv').read_text()
    assert '\'=HYPERLINK(""evil.example"")' in text and '\n=' not in text and ',=' not in text
    assert read_manifest(ds)[0]['class'] == '=HYPERLINK("evil.example")'
    assert M._cell('-1+2') == "'-1+2" and M._cell('@x') == "'@x" and M._cell('fine') == 'fine'

def test_passwords_in_urls_are_not_stored(srv, tmp_path):
    seen = []
    def needs_auth(h):
        seen.append(h.headers.get('Authorization'))
        h.reply(200, enc(photo(5)))
    srv.routes['/private.jpg'] = needs_auth
    url = srv.url.replace('http://', 'http://me:s3cret@') + '/private.jpg'
    ds = tmp_path/'ds'
    rep = gather(ds, {'x': url_file(tmp_path, 'x', [url])}, **QUICK)
    assert len(rep.kept) == 1 and seen and seen[0].startswith('Basic ')  # the password was used...
    assert 's3cret' not in (ds/'manifest.csv').read_text() and 'me:***@' in rep.kept[0]['url']  # ...and not written down
    assert gather(ds, {'x': tmp_path/'urls_x.txt'}, **QUICK).fetched == 0

@pytest.mark.skipif(not shutil.which('openssl'), reason='needs the openssl command to make a certificate')
def test_an_untrusted_certificate_is_not_transient(tmp_path):
    key, crt = tmp_path/'k.pem', tmp_path/'c.pem'
    subprocess.run(['openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', str(key), '-out', str(crt),
                    '-days', '1', '-subj', '/CN=127.0.0.1'], check=True, capture_output=True)
    s = Server()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain(crt, key)
    s.httpd.socket = ctx.wrap_socket(s.httpd.socket, server_side=True)
    try:
        url = s.add('/a.jpg', enc(photo(1))).replace('http://', 'https://')
        rec, = G.download_images([url], tmp_path/'dl', progress=False, timeout=2, deadline=5)
        assert rec['reason'].startswith('tls error') and rec['kind'] == 'tls' and not is_transient(rec['kind'])
    finally: s.close()

def test_nothing_gathered_is_a_failure_on_the_command_line(tmp_path, monkeypatch, capsys):
    from imgclf.cli import run
    monkeypatch.setattr(G, 'ddgs_results', lambda *a, **k: ([], ["ddgs 'cats': could not reach duckduckgo.com"]))
    assert run(['gather', str(tmp_path/'ds'), '--class', 'x=cats', '--quiet']) == 1
    assert 'no pictures were gathered' in capsys.readouterr().err
    with pytest.raises(SystemExit) as e: run(['gather', str(tmp_path/'ds'), '--class', 'x=cats', '--shrink', '-1'])
    assert e.value.code == 1 and 'shrink must be 0 (keep the size) or a number of pixels, not -1' in capsys.readouterr().err

def test_unusable_dataset_folders_get_a_clear_message(tmp_path):
    (tmp_path/'afile').write_text('x')
    with pytest.raises(ImgclfError, match='Cannot create the dataset folder .*a file is in the way'):
        gather(tmp_path/'afile'/'ds', {'x': 'ddg:cats'}, **QUICK)
    for bad in [dict(workers=0), dict(min_size=-1), dict(deadline=0), dict(near_dup=99), dict(max_images=0)]:
        with pytest.raises(ImgclfError, match=list(bad)[0]): gather(tmp_path/'ds', {'x': 'ddg:cats'}, **QUICK | bad)

@pytest.mark.skipif(os.geteuid() == 0, reason='root writes into read-only folders')
def test_a_read_only_dataset_folder(tmp_path):
    ds = tmp_path/'ds'; ds.mkdir(); ds.chmod(0o555)
    try:
        with pytest.raises(ImgclfError, match='Cannot write into the dataset folder'): gather(ds, {'x': 'ddg:cats'}, **QUICK)
    finally: ds.chmod(0o755)

def test_files_follow_the_umask(srv, tmp_path):
    ds = tmp_path/'ds'
    rep = gather(ds, {'x': url_file(tmp_path, 'x', [srv.add('/a.jpg', enc(photo(1)))])}, **QUICK)
    um = os.umask(0o22); os.umask(um)
    for f in [ds/'manifest.csv', ds/rep.kept[0]['file']]: assert stat.S_IMODE(f.stat().st_mode) == 0o666 & ~um, f

def test_a_manifest_saved_by_a_spreadsheet_is_read(srv, tmp_path):
    ds = tmp_path/'ds'
    f = url_file(tmp_path, 'x', [srv.add('/a.jpg', enc(photo(1))), srv.add('/b.jpg', enc(photo(2)))])
    gather(ds, {'x': f}, **QUICK)
    rows = list(csv.DictReader(open(ds/'manifest.csv', newline='')))
    for r in rows: r['width'] = f"{r['width']}.0"
    with open(ds/'manifest.csv', 'w', newline='', encoding='utf-8-sig') as out:  # BOM, CRLF and 160.0, as a spreadsheet saves
        w = csv.DictWriter(out, list(rows[0])); w.writeheader(); w.writerows(rows)
    srv.reset()
    rep = gather(ds, {'x': f}, **QUICK)
    assert rep.fetched == 0 and srv.received == {} and all(isinstance(r['width'], int) for r in rep.kept)

def test_a_search_term_with_a_slash(tmp_path):
    ds = tmp_path/'ds'
    assert S.check_sources({'x': 'ddg:AC/DC', 'y': 'commons:AC/DC'}, ds, 'ddgs') == [('x', 'ddgs', 'AC/DC'), ('y', 'commons', 'AC/DC')]
    with pytest.raises(ImgclfError, match="if 'AC/DC' is a search term, write it as ddg:AC/DC"): S.check_sources({'x': 'AC/DC'}, ds, 'ddgs')

def test_a_manifest_cannot_make_gather_read_a_device(tmp_path):
    "A pending row from a folder, pointing at /dev/zero (endless) or a pipe (blocks forever), is dropped, not read"
    ds = tmp_path/'ds'; ds.mkdir()
    fifo = tmp_path/'pipe'; os.mkfifo(fifo)
    rows = [dict(_kept('x', '', ''), source='folder', url=u, status='pending', file='', sha='') for u in ['/dev/zero', str(fifo)]]
    _manifest(ds, rows)
    rep = gather(ds, {'x': 'ddg:cats'}, **QUICK, ddg_url='http://127.0.0.1:9')
    assert [r['reason'] for r in rep.rows if r['source'] == 'folder'] == ['not a file: a device, a pipe or a folder'] * 2
