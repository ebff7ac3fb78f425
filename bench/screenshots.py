"""Take the screenshots of the course's widgets and of `imgclf serve`'s page (`nbs/images/*.png`): widgets do not show on
a static page.

    python bench/screenshots.py [NAME ...]     # all of them, or the named ones

Each view is a small notebook, written to a temporary folder, that builds a widget in the state to show (a
cell clicked, a photo classified) on the built-in flower photos; Voila serves it on 127.0.0.1 and Chromium,
driven by Playwright, photographs the widget. Needs Chromium (`apt-get install chromium`; $CHROMIUM names
another). The models are the notebooks' own `demo_learner`, trained once into a temporary IMGCLF_HOME.
"""
import json, os, shutil, signal, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT/'tests'))
from conftest import free_port  # noqa: E402
OUT = ROOT/'nbs'/'images'
SETUP = "import warnings; warnings.simplefilter('ignore')\nfrom imgclf.photos import flower_photos\n"
EXPLORER = """from imgclf.train import demo_learner, valid_predictions
from imgclf.interpret import ConfusionExplorer, confusion_table
learn = demo_learner(); vp = valid_predictions(learn)
ex = ConfusionExplorer(vp, learn.dls.vocab)
"""
CLICK = """t = confusion_table(vp, learn.dls.vocab)
ex.select(*max(((a, p) for a in t.index for p in t.columns if a != p), key=lambda ap: t.loc[ap]))
"""
APP = """from IPython.display import display
from imgclf.export import demo_model
from imgclf.model import load_model
from imgclf.app import ClassifierApp
app = ClassifierApp(load_model(demo_model()))
display(app.page())  # the app's style sheet and script, as the app notebook shows them
"""
def lesson_cells(nb:str, first:str, last:str) -> str:
    "The code cells of lesson `nb` from the one containing `first` to the one containing `last`: a view that runs the lesson"
    cells = [''.join(c['source']) for c in json.loads((ROOT/'nbs'/nb).read_text())['cells'] if c['cell_type'] == 'code']
    found = [next((k for k, s in enumerate(cells) if text in s), None) for text in (first, last)]
    if None in found: sys.exit(f'nbs/{nb}: no code cell contains {(first, last)[found.index(None)]!r}: update this view')
    i, j = found
    return '\n'.join(cells[i:j + 1]) + '\n'
# 06a_app's five-widget app after its hidden cell chose a sunflower and clicked Classify. Voila's page does not show
# what an Output captured while the notebook ran, so the thumbnail the callback displayed is shown by an Image widget
APP_SMALL = lesson_cells('06a_app.ipynb', 'from fastcore.test import', 'def visitor_chooses') + """import io
small, thumb = PILImage.create(sunflower.read_bytes()).to_thumb(256), io.BytesIO()
small.save(thumb, format='JPEG')
widgets.VBox([upload, btn, widgets.Image(value=thumb.getvalue(), format='jpeg', width=small.width), lbl])"""
# In Voila's page each of the cleaner's photo boxes is a million pixels wide (one photo per screen); JupyterLab
# shows them side by side, as this style does
CSS = {'clean_cleaner': '.widget-box > .widget-vbox { flex: 0 0 auto !important; width: 136px !important; }'}
VIEWS = {  # name: (code whose last line displays the widget, width of the browser window[, its height])
    'app_small': (APP_SMALL, 400),
    'interpret_explorer': (EXPLORER + 'ex.widget', 700),
    'interpret_cell': (EXPLORER + CLICK + 'ex.widget', 900),
    'clean_cleaner': ("""from imgclf.train import demo_learner
from fastai.vision.widgets import ImageClassifierCleaner
cleaner = ImageClassifierCleaner(demo_learner(), max_n=8)
cleaner.dd_cats.value = 'sunflower'
from fastai.vision.widgets import _open_thumb
for f, box in zip(cleaner.fns, cleaner.iw.widget.children):  # Voila renders an Output only if its data is set, not captured
    box.children[0].append_display_data(_open_thumb(f, 128, 256))
cleaner.widget""", 1100),
    'clean_imgclf': ("""from imgclf.cleaner import Cleaner
cl = Cleaner(flower_photos(), page_size=12, thumb=150)
r = cl.rows
cl.choices.mark(r.file[0], 'delete', r.sha[0])
for i in r.index[r.kind == 'mislabelled'][:2]: cl.choices.mark(r.file[i], r.suggested[i], r.sha[i])
cl.go(0)
cl.widget""", 1150),
    'app': (APP + """photo = sorted((flower_photos()/'rose').iterdir())[5]
app.classify(photo.read_bytes(), photo.name)
app.widget""", 390, 1000),
    'app_unsure': (APP + """import io, math
from PIL import Image
from sklearn.datasets import load_sample_image
b = io.BytesIO(); Image.fromarray(load_sample_image('china.jpg')).save(b, format='JPEG')
p = app.classify(b.getvalue(), 'temple.jpg')  # the temple of 06a_app, none of the classes
picky = ClassifierApp(app.model, threshold=min(1.0, math.floor(p.probability * 100 + 1) / 100))  # as 06a_app: just above its answer
display(picky.page())
picky.classify(b.getvalue(), 'temple.jpg')
picky.widget""", 1000),
}


SERVED = {'serve_390': 390}  # `imgclf serve`'s page (the demo model), at this width, after a photo of roses


def shoot_served(name:str, tmp:Path, browser):
    "`imgclf serve --port 0` on the demo model, the page photographed whole after a rose was chosen"
    sys.path.insert(0, str(ROOT))
    from imgclf.export import demo_model
    from imgclf.photos import flower_photos
    from conftest import start_and_read_port, stop
    proc, port = start_and_read_port([str(Path(sys.executable).parent/'imgclf'), 'serve', '--model', str(demo_model()), '--port', '0'],
                                     dict(os.environ), tmp/f'{name}.log', cwd=tmp)
    try:
        page = browser.new_page(viewport=dict(width=SERVED[name], height=800), device_scale_factor=1)
        page.goto(f'http://127.0.0.1:{port}/', timeout=120_000)
        page.locator('#examples:not([hidden]) img').first.wait_for(timeout=60_000)
        with page.expect_file_chooser() as fc: page.locator('label.drop').click()
        fc.value.set_files(str(sorted((flower_photos()/'rose').iterdir())[5]))
        page.locator('#results .row').first.wait_for(timeout=120_000)
        page.wait_for_function("() => [...document.images].every(i => i.complete)", timeout=60_000)
        page.screenshot(path=str(OUT/f'{name}.png'), full_page=True)
        page.close()
    finally:
        stop(proc)
    print(f'{OUT/name}.png', flush=True)


def notebook(code:str) -> dict:
    cell = lambda src: dict(cell_type='code', metadata={}, execution_count=None, outputs=[], source=src)
    return dict(cells=[cell(SETUP), cell(code)], metadata=dict(kernelspec=dict(name='python3', display_name='Python 3',
                language='python')), nbformat=4, nbformat_minor=5)


def shoot(name:str, tmp:Path, browser):
    code, width, *height = VIEWS[name]
    nb = tmp/f'{name}.ipynb'
    nb.write_text(json.dumps(notebook(code)))
    port, log = free_port(), open(tmp/f'{name}.log', 'wb')
    proc = subprocess.Popen([str(Path(sys.executable).parent/'voila'), str(nb), '--no-browser', f'--port={port}',
                             '--Voila.ip=127.0.0.1', '--Voila.port_retries=0'], cwd=tmp, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        page = browser.new_page(viewport=dict(width=width, height=(height or [600])[0]), device_scale_factor=1)
        for _ in range(60):
            try: page.goto(f'http://127.0.0.1:{port}/', timeout=300_000); break
            except Exception: time.sleep(1)
        widget = page.locator('.jp-OutputArea-output .widget-vbox, .jp-OutputArea-output .widget-box').first
        widget.wait_for(timeout=300_000)
        if name in CSS: page.add_style_tag(content=CSS[name])
        seen, stable = -1, 0
        while stable < 4:  # widgets arrive one by one: wait until the number of images stops changing for 2 s
            n = page.locator('img').count()
            stable, seen = (stable + 1, n) if n == seen else (0, n)
            page.wait_for_timeout(500)
        OUT.mkdir(exist_ok=True)
        widget.screenshot(path=str(OUT/f'{name}.png'))
        page.close()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try: proc.wait(15)
        except subprocess.TimeoutExpired: os.killpg(proc.pid, signal.SIGKILL)
    print(f'{OUT/name}.png', flush=True)


if __name__ == '__main__':
    names = sys.argv[1:] or [*VIEWS, *SERVED]
    exe = os.environ.get('CHROMIUM') or shutil.which('chromium') or '/usr/bin/chromium'
    from playwright.sync_api import sync_playwright
    with tempfile.TemporaryDirectory() as d, sync_playwright() as p:
        os.environ['IMGCLF_HOME'] = str(Path(d)/'home')
        b = p.chromium.launch(executable_path=exe, args=['--headless', '--no-sandbox', '--disable-gpu',
                                                         '--disable-background-networking'])
        for n in names: (shoot_served if n in SERVED else shoot)(n, Path(d), b)
        b.close()
