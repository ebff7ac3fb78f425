"""imgclf's cleaner as a learner meets it: a real JupyterLab 4 and a real Notebook 7 on 127.0.0.1, driven by Chromium through Playwright.
With IMGCLF_COLAB_VENV naming a stand-in for Google Colab (made by .ci/colab), also in the classic Notebook 6 and
ipywidgets 7 of that venv, the versions Colab has."""
import hashlib, json, os, re, shutil, subprocess, time, urllib.request
from pathlib import Path
import pytest
from conftest import BIN, free_port, start_and_read_port, stop
from test_app import chromium_path, CHROMIUM_ARGS

try: from playwright.sync_api import TimeoutError as PlaywrightTimeout
except ImportError: PlaywrightTimeout = TimeoutError  # no Playwright: the browser tests skip

TOKEN = 'imgclf-test-token'
PAGE = 4  # tiles per page of the cleaner under test


def sums(root:Path) -> dict:
    "SHA-256 of every picture under `root`, by its path relative to `root` (the trash left out)"
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in root.rglob('*.jpg') if '.trash' not in p.parts}


FRONTENDS = {'lab': 'lab/tree/clean.ipynb', 'notebook': 'notebooks/clean.ipynb', 'notebook6': 'notebooks/clean.ipynb'}  # -> where it opens a notebook
COLAB = os.environ.get('IMGCLF_COLAB_VENV')

def server_bin(front:str) -> Path:
    "Where the front end's `jupyter` lives: this venv, or for classic Notebook 6 (as in Colab) the Colab stand-in's"
    return Path(COLAB)/'bin' if front == 'notebook6' else BIN

# What to find in the page: JupyterLab and Notebook 7 share Lumino's classes; classic Notebook 6 has its own.
JP = dict(cell='.jp-NotebookPanel .jp-Cell', editor='.jp-Cell .jp-InputArea-editor', prompt='.jp-Cell .jp-InputPrompt',
          out='.jp-OutputArea', idle='.jp-Notebook-ExecutionIndicator[data-status="idle"]', dialog='.jp-Dialog')
CLASSIC = dict(cell='#notebook .cell', editor='.cell .CodeMirror', prompt='.cell .input_prompt', out='.output_area',
               idle='#kernel_indicator_icon.kernel_idle_icon', dialog='.modal-dialog')
def sel(front:str) -> dict: return CLASSIC if front == 'notebook6' else JP
OUT = ':is(.jp-OutputArea, .output_area)'  # a cell's output, in either

@pytest.fixture(scope='module', params=list(FRONTENDS))
def jupyter(imgclf_home, tmp_path_factory, request):
    "A small dataset, a notebook that opens imgclf's Cleaner on it, and JupyterLab or Notebook 7 serving both"
    from imgclf.photos import flower_photos
    front = request.param
    if front == 'notebook6' and not COLAB: pytest.skip('IMGCLF_COLAB_VENV does not name a Colab stand-in (.ci/colab makes one)')
    cmd = 'notebook' if front == 'notebook6' else front
    if not (server_bin(front)/f'jupyter-{cmd}').exists(): pytest.skip(f'jupyter {cmd} is not installed in {server_bin(front)}')
    tmp = tmp_path_factory.mktemp(front)
    ds = tmp/'flowers'
    for c in ['daisy', 'rose', 'tulip']:
        (ds/c).mkdir(parents=True)
        for f in sorted((flower_photos()/c).glob('*.jpg'))[:6]: shutil.copy(f, ds/c)
    src = f"from imgclf.cleaner import Cleaner\ncl = Cleaner({str(ds)!r}, page_size={PAGE})\ncl"
    nb = {'cells': [{'cell_type': 'code', 'execution_count': None, 'id': 'a1', 'metadata': {}, 'outputs': [], 'source': src}],
          'metadata': {'kernelspec': {'display_name': 'Python 3', 'language': 'python', 'name': 'python3'}}, 'nbformat': 4, 'nbformat_minor': 5}
    (tmp/'clean.ipynb').write_text(json.dumps(nb))
    logf = tmp/'lab.log'
    env = {**os.environ, 'IMGCLF_HOME': str(imgclf_home), 'JUPYTER_CONFIG_DIR': str(tmp/'config'),
           'JUPYTER_DATA_DIR': str(tmp/'data'), 'IPYTHONDIR': str(tmp/'ipython'), 'JUPYTER_RUNTIME_DIR': str(tmp/'runtime')}
    quiet = ['--LabApp.news_url=', '--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate'] if front == 'lab' else []
    app = (['--NotebookApp.ip=127.0.0.1', '--NotebookApp.port_retries=0', f'--NotebookApp.token={TOKEN}', f'--NotebookApp.notebook_dir={tmp}']
           if front == 'notebook6' else  # classic Notebook 6 is its own server, with its own option names
           ['--ServerApp.ip=127.0.0.1', '--ServerApp.port_retries=0', f'--IdentityProvider.token={TOKEN}', f'--ServerApp.root_dir={tmp}'])
    port = free_port() if front == 'notebook6' else 0  # Jupyter Server binds a port the system picks and prints it; Colab's Notebook 6 is given one
    proc, port = start_and_read_port([str(server_bin(front)/'jupyter'), cmd, '--no-browser', f'--port={port}', *app, *quiet, '--allow-root'],
                                     env=env, log=logf, timeout=120)
    url, deadline = f'http://127.0.0.1:{port}/', time.monotonic() + 120
    while True:  # it prints its address a moment before it answers
        try: urllib.request.urlopen(f'{url}api/status?token={TOKEN}', timeout=2); break
        except OSError: pass
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            pytest.fail(f'jupyter {front} did not start:\n{"".join(proc.lines)[-3000:]}')
        time.sleep(0.2)
    yield url, ds, front
    stop(proc)


def what_the_cell_shows(pg, s:dict) -> str:
    "The first cell's prompt and output text, and any dialog: what to look at when the cleaner does not appear"
    return pg.evaluate('''s => {
        const q = x => document.querySelector(x);
        return `prompt ${q(s.prompt)?.textContent}; kernel idle ${!!q(s.idle)}; `
             + `dialog ${q(s.dialog)?.textContent?.slice(0, 200)}; output ${q(s.out)?.textContent?.slice(0, 1500)}`;
    }''', s)


def run_first_cell(pg, s:dict, tries:int=3):
    "Run the first cell with Shift+Enter as a person does, and make sure it started: a busy browser can lose the first key press"
    prompt = s['prompt']
    for _ in range(tries):
        if pg.query_selector(s['dialog']): pg.keyboard.press('Escape')
        pg.click(s['editor'])
        pg.keyboard.press('Shift+Enter')
        try:
            pg.wait_for_function(f'() => /\\[(\\*|\\d+)\\]/.test(document.querySelector("{prompt}").textContent)', timeout=20_000)
            return
        except PlaywrightTimeout: pass
    raise AssertionError(f'the notebook cell never started running: {what_the_cell_shows(pg, s)}')


@pytest.fixture(scope='module')
def page(jupyter):
    exe = chromium_path()
    if exe is None: pytest.skip('Chromium is not installed (apt-get install chromium)')
    from playwright.sync_api import sync_playwright
    url, ds, front = jupyter
    s = sel(front)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, headless=True, args=CHROMIUM_ARGS)
        pg = browser.new_page(viewport={'width': 1400, 'height': 1000})
        pg.goto(f'{url}{FRONTENDS[front]}?token={TOKEN}')
        pg.wait_for_selector(s['cell'], timeout=90_000)
        pg.wait_for_selector(s['idle'], state='attached', timeout=90_000)  # classic's indicator is an icon, maybe of no size
        run_first_cell(pg, s)
        try: pg.wait_for_selector('text=/page 1 of/', timeout=180_000)
        except PlaywrightTimeout as e: raise AssertionError(f'the cleaner did not show its first page: {what_the_cell_shows(pg, s)}') from e
        yield pg
        browser.close()


def tiles(pg) -> dict:
    "The tiles on screen: file -> its action menu"
    out = {}
    for b in pg.query_selector_all(f'{OUT} button[title]'):
        f = b.get_attribute('title')
        if re.match(r'^[a-z]+/.+\.jpg$', f or ''):
            tile = b.evaluate_handle('b => b.closest(".widget-vbox")')
            out[f] = tile.query_selector('select')
    return out


def chosen(sel) -> str: return sel.evaluate('s => s.options[s.selectedIndex].text').replace('\xa0', ' ')

ON_PAGE = """a => { const t = [...document.querySelectorAll('button[title]')].map(b => b.title).filter(x => /^[a-z]+\\/.+\\.jpg$/.test(x));
    return document.body.textContent.includes(a.where) && t.length === a.k && t.every(x => x.startsWith(a.prefix))
           && (a.files === null || JSON.stringify([...t].sort()) === JSON.stringify(a.files)); }"""

def on_page(pg, n:int, page:int=1, prefix:str='', files=None):
    "Wait until the cleaner shows page `page` of a view of `n` pictures: its 'page .. of ..' line, and all its tiles (each of `prefix`, or exactly `files`)"
    where, k = f'page {page} of {-(-n // PAGE)} ({n} pictures)', min(PAGE, n - (page - 1) * PAGE)
    pg.wait_for_function(ON_PAGE, arg=dict(where=where, k=k, prefix=prefix, files=sorted(files) if files else None), timeout=30_000)

def show(pg, view:str, n:int, prefix:str='', files=None):
    "Pick a view in the cleaner's Show menu, and wait for its first page of `n` pictures (see `on_page`)"
    sel = pg.query_selector(f'{OUT} .widget-dropdown:has(label:text("Show")) select')
    sel.select_option(label=view)
    on_page(pg, n, 1, prefix, files)

def count(ds:Path, c:str='*') -> int: return sum(not f.parent.name.startswith('.') for f in ds.glob(f'{c}/*.jpg'))  # pictures on disk


def test_choices_survive_views_and_pages_apply_and_undo_are_exact(page, jupyter):
    pg, (_, ds, _) = page, jupyter
    before = sums(ds)
    t = tiles(pg)
    assert len(t) == 4 and all(f in before for f in t)  # the first page: four pictures of the dataset
    f_del, f_rel = list(t)[:2]
    target = next(c for c in ['daisy', 'rose', 'tulip'] if c != f_rel.split('/')[0])
    t[f_del].select_option(label='delete')
    t[f_rel].select_option(label=f'move to {target}')
    pg.wait_for_selector('text=1 to delete, 1 to relabel')
    # another view, another page, and back
    show(pg, 'Class: tulip', count(ds, 'tulip'), 'tulip/'); pg.click(f'{OUT} button:text("▶")'); on_page(pg, count(ds, 'tulip'), 2, 'tulip/')
    show(pg, 'My choices', 2, files={f_del, f_rel})
    assert set(tiles(pg)) == {f_del, f_rel}
    show(pg, 'All pictures, most suspect first', count(ds))
    t = tiles(pg)
    assert chosen(t[f_del]) == 'delete' and chosen(t[f_rel]) == f'move to {target}'
    pg.click(f'{OUT} button:text("Apply")')
    pg.wait_for_selector('text=/Applied/')
    assert not (ds/f_del).exists() and (ds/target/Path(f_rel).name).is_file() and not (ds/f_rel).exists()
    assert len(list((ds/'.trash').rglob(Path(f_del).name))) == 1
    # the widget read the dataset again: the moved picture is shown in its new class, the deleted one nowhere
    on_disk = {p.relative_to(ds).as_posix() for p in (ds/target).glob('*.jpg')}  # its six and the moved one (less f_del if it was one)
    show(pg, f'Class: {target}', len(on_disk), f'{target}/')
    first = set(tiles(pg))
    pg.click(f'{OUT} button:text("▶")'); on_page(pg, len(on_disk), 2, f'{target}/')
    shown = first | set(tiles(pg))
    assert shown == on_disk and f'{target}/{Path(f_rel).name}' in shown, (shown, on_disk)
    pg.click(f'{OUT} button:text("◀")'); on_page(pg, len(on_disk), 1, f'{target}/')
    pg.click(f'{OUT} button:text("Undo last apply")')
    pg.wait_for_selector('text=/Undone/')
    assert sums(ds) == before  # every picture back, byte for byte


def test_after_undo_a_tile_acts_on_the_file_it_shows(page, jupyter):
    "fastai's cleaner, after apply, undo and a change of class, moved a different file than the one shown"
    pg, (_, ds, _) = page, jupyter
    show(pg, 'Class: rose', count(ds, 'rose'), 'rose/')
    t = tiles(pg)
    assert t and all(f.startswith('rose/') and (ds/f).is_file() for f in t)
    f = list(t)[1]
    before = sums(ds)
    t[f].select_option(label='delete')
    pg.wait_for_selector('text=1 to delete, 0 to relabel')
    pg.click(f'{OUT} button:text("Apply")')
    pg.wait_for_selector('text=/Applied/')
    gone = set(before) - set(sums(ds))
    assert gone == {f}  # exactly the file on that tile, nothing else
    pg.click(f'{OUT} button:text("Undo last apply")')
    pg.wait_for_selector('text=/Undone/')
    assert sums(ds) == before


def sure_ones(ds:Path, front:str) -> dict:
    "The sure ones on the page on screen, as the widget ranked them, ranked by the kernel's Python: file -> suggested class"
    code = '''import json, sys
from imgclf.rank import rank_suspects
from imgclf.cleaner import sure_suggestions
r = rank_suspects(sys.argv[1], progress=False).head(4)
sure = r[sure_suggestions(r)]
print(json.dumps(dict(zip(sure.file, sure.suggested))))'''
    py = server_bin(front)/'python'
    r = subprocess.run([str(py), '-c', code, str(ds)], capture_output=True, text=True, env=os.environ, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_accept_sure_ones_chooses_what_the_tiles_suggest(page, jupyter):
    "The button, clicked in the page: each picture it chooses is moved to the class its tile says it looks like, and the tally counts them"
    pg, (_, ds, front) = page, jupyter
    show(pg, 'All pictures, most suspect first', count(ds))
    pg.click(f'{OUT} button:text("Accept sure ones")')
    pg.wait_for_selector('text=/on this page chosen|No likely mislabelled picture/')
    on_page(pg, count(ds))  # the page drawn again, with the new choices in its menus
    moved = {}
    for f, sel in tiles(pg).items():
        if chosen(sel).startswith('move to '):
            text = sel.evaluate('s => s.closest(".widget-vbox").innerText').replace('\n', ' ')
            assert f'looks like {chosen(sel)[8:]} ' in text and 'likely mislabelled' in text, text
            moved[f] = sel
    sure = sure_ones(ds, front)
    assert {f: chosen(sel)[8:] for f, sel in moved.items()} == sure, sure
    pg.wait_for_selector(f'text=0 to delete, {len(moved)} to relabel' if moved else 'text=nothing chosen yet')
    for sel in moved.values(): sel.select_option(label='keep')  # leave nothing chosen
    if moved: pg.wait_for_selector('text=nothing chosen yet')
