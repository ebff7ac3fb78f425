"""The app's first answer, as a visitor's browser sees it: `imgclf app` against the app as it was designed before
(plain `voila nbs/07_app.ipynb`, notebook and library of an older commit, loading a pickle with fastai), in one run.

    python bench/bench_app.py [--runs 2] [--model M.safetensors] [--old COMMIT] [--old-model M.pkl]

For each design and run: start the server; open the page in Chromium as soon as it answers; time until the page is
usable (its upload button shown) and until the first prediction of a real photo is on screen (cold: the first
visitor). Then, on the now warm server, a second visitor: page opened -> usable -> first prediction (the target:
within 3 s). Also the memory of the kernel behind a page (USS: what stopping it gives back). Needs Chromium.
"""
import argparse, os, re, signal, subprocess, sys, tempfile, time
from pathlib import Path
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT/'tests'))
from test_app import chromium_path, CHROMIUM_ARGS  # noqa: E402
from conftest import free_port  # noqa: E402


def kernel_pids(proc) -> list:
    out = []
    for c in psutil.Process(proc.pid).children(recursive=True):
        try:
            if 'ipykernel' in ' '.join(c.cmdline()): out.append(c.pid)
        except psutil.Error: pass
    return out


def visit(browser, url, photo, new:bool) -> dict:
    "Open the app, classify `photo`; seconds from opening to usable and to the answer on screen"
    page = browser.new_page(viewport=dict(width=1200, height=900))
    t = time.perf_counter()
    page.goto(url, timeout=300_000)
    if new:
        page.locator('.imgclf-upload').wait_for(timeout=300_000); usable = time.perf_counter() - t
        with page.expect_file_chooser() as fc: page.locator('.imgclf-upload').click()
        fc.value.set_files(str(photo))
        page.locator('.imgclf-answer').wait_for(timeout=300_000)
    else:  # the older design: Upload, then Classify
        page.get_by_role('button', name='Classify').wait_for(timeout=300_000); usable = time.perf_counter() - t
        with page.expect_file_chooser() as fc: page.get_by_role('button', name=re.compile('Upload')).click()
        fc.value.set_files(str(photo))
        page.wait_for_function("() => !document.querySelector('button.mod-primary:not(.widget-upload)')?.disabled", timeout=300_000)
        page.get_by_role('button', name='Classify').click()
        page.get_by_text('Prediction:').wait_for(timeout=300_000)
    answer = time.perf_counter() - t
    return dict(page=page, usable=usable, answer=answer)


def run_design(name, cmd, env, cwd, browser, photo, new) -> dict:
    logf = Path(cwd)/f'{name}.log'
    t0 = time.perf_counter()
    with open(logf, 'wb') as log:
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        while True:
            m = re.search(r'running at:\s*(http://\S+)', logf.read_text(errors='replace'))
            if m: break
            if proc.poll() is not None: raise SystemExit(f'{name} exited:\n{logf.read_text()[-3000:]}')
            time.sleep(0.05)
        url = m.group(1)
        listening = time.perf_counter() - t0
        first = visit(browser, url, photo, new)
        launch_usable, launch_answer = time.perf_counter() - t0 - first['answer'] + first['usable'], time.perf_counter() - t0
        mem = [psutil.Process(p).memory_full_info() for p in kernel_pids(proc)]
        time.sleep(8 if new else 0)  # the pool refills behind the first visitor
        second = visit(browser, url, photo, new)
        first['page'].close(); second['page'].close()
        return dict(listening=listening, launch_usable=launch_usable, launch_answer=launch_answer,
                    warm_usable=second['usable'], warm_answer=second['answer'],
                    kernel_uss=max(m.uss for m in mem) / 2**20, kernel_rss=max(m.rss for m in mem) / 2**20, kernels=len(mem))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try: proc.wait(20)
        except subprocess.TimeoutExpired: os.killpg(proc.pid, signal.SIGKILL)


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--runs', type=int, default=2)
    p.add_argument('--model', help='a .safetensors model (default: the demo model, imgclf.export.demo_model())')
    p.add_argument('--old', default='a202685', help='the commit whose notebook and library are the older design')
    p.add_argument('--old-model', help="a fastai pickle for the older design (default: that commit's demo_model(), trained once "
                                       "into IMGCLF_HOME/bench-app-COMMIT)")
    a = p.parse_args()
    from imgclf.core import image_files
    from imgclf.photos import flower_photos
    photo = image_files(flower_photos()/'rose')[5]
    tmp = Path(tempfile.mkdtemp(prefix='bench_app_'))
    old = tmp/'old'; old.mkdir()
    subprocess.run(f'git -C {ROOT} archive {a.old} imgclf nbs/07_app.ipynb | tar -x -C {old}', shell=True, check=True)
    base = {**os.environ, 'JUPYTER_CONFIG_DIR': str(tmp/'config'), 'JUPYTER_RUNTIME_DIR': str(tmp/'runtime'),
            'IPYTHONDIR': str(tmp/'ipython'), 'OMP_NUM_THREADS': os.environ.get('OMP_NUM_THREADS', '2')}
    from imgclf.core import imgclf_home
    # the older design's own demo model, trained once by its own library (a pickle only loads beside the code that wrote it)
    old_env = {**base, 'PYTHONPATH': str(old), 'IMGCLF_HOME': str(imgclf_home()/f'bench-app-{a.old}')}
    old_model = a.old_model or subprocess.run([sys.executable, '-c', 'from imgclf.export import demo_model; print(demo_model())'],
                                              env=old_env, cwd=tmp, capture_output=True, text=True, check=True).stdout.split()[-1]
    if a.model: model = a.model
    else:
        from imgclf.export import demo_model
        model = str(demo_model())
    designs = {
        'imgclf app': ([str(Path(sys.executable).parent/'imgclf'), 'app', '--model', model, '--no-browser'], base, True),
        'plain voila, older design': ([sys.executable, '-m', 'voila', str(old/'nbs'/'07_app.ipynb'), '--no-browser',
                                       '--Voila.ip=127.0.0.1', '--show_tracebacks=False'], {**old_env, 'IMGCLF_MODEL': old_model}, False)}
    from playwright.sync_api import sync_playwright
    results = {k: [] for k in designs}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        for r in range(a.runs):
            for name, (cmd, env, new) in designs.items():
                port = free_port()
                cmd = cmd + [f'--port={port}'] if not new else cmd + ['--port', str(port)]
                res = run_design(name.split(',')[0].replace(' ', '_'), cmd, env, tmp, browser, photo, new)
                results[name].append(res)
                print(f'run {r+1} {name:27} ' + '  '.join(f'{k} {v:.1f}' for k, v in res.items()), flush=True)
        browser.close()
    import statistics as st
    med = {n: {k: st.median(r[k] for r in rs) for k in rs[0]} for n, rs in results.items()}
    print(f'\nmedian of {a.runs} runs, seconds (memory in MiB), 2 cores, Chromium:')
    keys = [('launch_usable', 'launch -> page usable'), ('launch_answer', 'launch -> first prediction'),
            ('warm_usable', 'warm server: page opened -> usable'), ('warm_answer', 'warm server: page opened -> first prediction'),
            ('kernel_uss', 'kernel memory, USS (MiB)'), ('kernel_rss', 'kernel memory, RSS (MiB)')]
    new, old_ = med['imgclf app'], med['plain voila, older design']
    print(f'{"":46}{"imgclf app":>12}{"older design":>14}{"ratio":>8}')
    for k, label in keys: print(f'{label:46}{new[k]:12.1f}{old_[k]:14.1f}{old_[k]/new[k]:7.1f}x')


if __name__ == '__main__': main()
