"""Benchmark: peak memory of `imgclf gather` when every URL is a small file that decodes to a giant picture.

A local server (127.0.0.1) serves one 16-bit greyscale PNG of 7000 x 7000 pixels (under 100 KB on the wire,
98 MB once decoded) under N different URLs. `imgclf gather` downloads them all with its defaults (`gather`'s `workers`
downloads at once) under `/usr/bin/time -v`; we print its peak resident memory, and, measured in the same run,
what decoding one such picture costs on its own and what the conversion to 8 bits through float64 costs (each
in a child process that reports its own peak, VmHWM: `ru_maxrss` would include this process's memory, which
the child inherits when it is started).

    python bench/bench_gather_memory.py            # 200 URLs
    python bench/bench_gather_memory.py --urls 50  # quicker
"""
import argparse, inspect, io, re, subprocess, sys, tempfile
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import numpy as np
from PIL import Image
from imgclf.localweb import start_server
from imgclf.gather import gather


def giant_png(side:int=7000) -> bytes:
    b = io.BytesIO(); Image.fromarray(np.full((side, side), 1000, np.uint16)).save(b, 'PNG'); return b.getvalue()

def serve(body:bytes):
    class H(BaseHTTPRequestHandler):
        protocol_version = 'HTTP/1.1'
        def log_message(self, *a): pass
        def do_GET(self):
            self.send_response(200); self.send_header('Content-Type', 'image/png')
            self.send_header('Content-Length', str(len(body))); self.end_headers(); self.wfile.write(body)
    httpd = start_server(H)
    return httpd, f'http://127.0.0.1:{httpd.server_port}'

ONE = '''
import resource, sys, numpy as np, io

def peak_mb() -> int:
    "This program's own peak resident memory: VmHWM (ru_maxrss would include the parent's, inherited when it started)"
    try:
        with open('/proc/self/status') as f:
            for l in f:
                if l.startswith('VmHWM:'): return int(l.split()[1]) // 1024
    except OSError: pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024  # not Linux: the best there is

from PIL import Image
data = open(sys.argv[1], 'rb').read()
im = Image.open(io.BytesIO(data)); im.load()
if sys.argv[2] == 'float64':
    a = np.asarray(im).astype(np.float64); Image.fromarray(np.clip(a / 65535. * 255 + 0.5, 0, 255).astype(np.uint8))
else:
    from imgclf.images import load_image; load_image(data)
print(peak_mb())
'''

def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--urls', type=int, default=200, help='how many URLs (default %(default)s)')
    args = p.parse_args()
    workers = inspect.signature(gather).parameters['workers'].default  # what `imgclf gather` uses unless told
    body = giant_png()
    httpd, base = serve(body)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp/'giant.png').write_bytes(body)
        one = {how: int(subprocess.run([sys.executable, '-c', ONE, str(tmp/'giant.png'), how], capture_output=True, text=True,
                                       check=True).stdout) for how in ('float64', 'imgclf')}
        urls = tmp/'urls_giant.txt'
        urls.write_text('\n'.join(f'{base}/giant.png?{i}' for i in range(args.urls)) + '\n')
        imgclf = Path(sys.executable).with_name('imgclf')
        out = subprocess.run(['/usr/bin/time', '-v', str(imgclf), 'gather', str(tmp/'ds'), '--class', f'giant={urls}', '--quiet'],
                             capture_output=True, text=True)
        peak = int(re.search(r'Maximum resident set size \(kbytes\): (\d+)', out.stderr).group(1)) // 1024
        kept = re.search(r'(\d+) pictures? kept', out.stdout)
    httpd.shutdown()
    print(f'{args.urls} URLs, each a {len(body):,}-byte PNG that decodes to 7000x7000 16-bit pixels ({7000*7000*2/2**20:.0f} MB)')
    print(f'one picture alone, peak RSS: {one["imgclf"]} MB through imgclf.load_image, {one["float64"]} MB converting through float64 '
          f'(ratio {one["imgclf"]/one["float64"]:.2f})')
    print(f'imgclf gather of all {args.urls}: peak RSS {peak} MB (exit {out.returncode}; '
          f'{kept.group(1) if kept else "?"} kept, the rest duplicates); {workers} downloads at once, decoding bounded by a memory budget')

if __name__ == '__main__': main()
