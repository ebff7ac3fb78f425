"The safe model file: the learner's probabilities exactly, loaded without fastai, hostile files refused by name."
import json, struct, subprocess, sys
from pathlib import Path
import numpy as np
import pytest
from PIL import Image
from imgclf.model import FORMAT_VERSION


@pytest.fixture(scope='module')
def trained(imgclf_home, tmp_path_factory):
    "A learner quickly trained on the built-in photos, and its export in the safe format"
    from imgclf.train import demo_learner
    from imgclf.export import export_classifier
    learn = demo_learner(out=tmp_path_factory.mktemp('runs'))
    path = export_classifier(learn, tmp_path_factory.mktemp('model')/'flowers.safetensors', name='flowers')
    return learn, path


def test_probabilities_equal_the_learners_on_the_validation_set(trained):
    from imgclf.model import load_model
    learn, path = trained
    clf = load_model(path)
    assert clf.classes == list(learn.dls.vocab) and clf.name == 'flowers' and clf.format == 'safetensors'
    dl = learn.dls.valid.new(shuffle=False, drop_last=False)
    with learn.no_bar(): want, _ = learn.get_preds(dl=dl)
    files = list(dl.items)
    got = np.concatenate([clf.probs([clf.open(f) for f in files[i:i+32]]) for i in range(0, len(files), 32)])
    assert got.shape == (len(files), 5) and len(files) >= 80
    assert np.abs(got - want.numpy()).max() < 1e-5
    assert np.allclose(got.sum(1), 1, atol=1e-5)
    assert (got.argmax(1) == want.numpy().argmax(1)).all()


BLOCK_FASTAI = """import sys, json
class NoFastai:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] == 'fastai': raise ImportError('fastai is blocked in this test')
sys.meta_path.insert(0, NoFastai())
try:
    import fastai
    raise SystemExit('fastai could be imported')
except ImportError: pass
from imgclf.model import load_model
clf = load_model(sys.argv[1])
p = clf.predict(sys.argv[2])
print(json.dumps(dict(label=p.label, probs=p.probs, fastai='fastai' in sys.modules)))
"""


def test_loads_and_predicts_where_fastai_cannot_be_imported(trained, imgclf_home):
    from imgclf.model import load_model
    from imgclf.core import image_files
    _, path = trained
    photo = image_files(Path(imgclf_home)/'flowers'/'tulip')[3]
    proc = subprocess.run([sys.executable, '-c', BLOCK_FASTAI, str(path), str(photo)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    want = load_model(path).predict(photo)
    assert out['fastai'] is False and out['label'] == want.label
    assert max(abs(out['probs'][c] - want.probs[c]) for c in want.probs) < 1e-6


def test_a_sideways_phone_photo_predicts_like_the_upright_one(trained, imgclf_home, tmp_path):
    "Saved the way phones save portraits: pixels turned, EXIF orientation 6 saying how to turn them back"
    from imgclf.model import load_model
    from imgclf.core import image_files
    clf = load_model(trained[1])
    flips = 0
    for f in image_files(Path(imgclf_home)/'flowers'/'sunflower')[:6] + image_files(Path(imgclf_home)/'flowers'/'rose')[:6]:
        im = Image.open(f).convert('RGB').resize((300, 200))  # not square, so a wrong turn changes the picture
        im.save(tmp_path/'upright.png')
        exif = Image.Exif(); exif[0x0112] = 6
        im.transpose(Image.Transpose.ROTATE_90).save(tmp_path/'sideways.png', exif=exif)
        up, side = clf.predict(tmp_path/'upright.png'), clf.predict(tmp_path/'sideways.png')
        assert side.probs == pytest.approx(up.probs, abs=1e-6), f
        plain = clf.prediction(clf.probs([Image.open(tmp_path/'sideways.png').convert('RGB')])[0])  # ignoring the tag
        flips += max(abs(plain.probs[c] - up.probs[c]) for c in up.probs) > 1e-3
    assert flips >= 6  # the tag matters: read as stored, the answers change


def test_pickle_only_when_asked(trained, tmp_path):
    from imgclf.core import ImgclfError
    from imgclf.export import export_classifier, load_classifier
    learn, path = trained
    pkl = export_classifier(learn, tmp_path/'flowers.pkl', pickle=True)
    with pytest.raises(ImgclfError, match='flowers.pkl is a pickle'): load_classifier(pkl)
    from imgclf.model import load_model
    with pytest.raises(ImgclfError, match='flowers.pkl is a pickle'): load_model(pkl)
    old = load_classifier(pkl, allow_pickle=True)
    assert old.format == 'pickle' and old.classes == list(learn.dls.vocab)
    assert load_classifier(path).format == 'safetensors'
    with pytest.raises(ImgclfError, match=r'ends in \.safetensors'): export_classifier(learn, tmp_path/'flowers.pt')


def test_a_trusted_pickle_converts_to_the_same_safe_model(trained, imgclf_home, tmp_path):
    "What `imgclf export --allow-pickle` does: the converted file gives the directly exported file's probabilities"
    from imgclf.export import export_classifier, load_classifier
    from imgclf.model import load_model
    from imgclf.core import image_files
    learn, path = trained
    old = load_classifier(export_classifier(learn, tmp_path/'flowers.pkl', pickle=True), allow_pickle=True)
    conv = load_model(export_classifier(old.learn, tmp_path/'converted.safetensors'))
    direct = load_model(path)
    assert conv.meta['transforms'] == direct.meta['transforms'] and conv.classes == direct.classes
    ims = [direct.open(f) for f in image_files(Path(imgclf_home)/'flowers'/'daisy')[:8]]
    assert np.abs(conv.probs(ims) - direct.probs(ims)).max() < 1e-6


def _with_meta(good:bytes, **changes) -> bytes:
    "The model file `good` with its description changed"
    n = struct.unpack('<Q', good[:8])[0]
    hdr = json.loads(good[8:8+n])
    meta = json.loads(hdr['__metadata__']['imgclf']); meta.update(changes)
    hdr['__metadata__']['imgclf'] = json.dumps(meta)
    h = json.dumps(hdr).encode(); h += b' ' * (-len(h) % 8)
    return struct.pack('<Q', len(h)) + h + good[8+n:]


def _head(meta_head, i, **kw): return [dict(l, **kw) if j == i else l for j, l in enumerate(meta_head)]


@pytest.mark.parametrize('case,message', [
    ('text', 'is not a model file: it is only'),
    ('truncated', 'is a damaged model file'),
    ('huge_header', 'byte header'),
    ('header_not_json', 'its header is not JSON'),
    ('no_metadata', 'without imgclf metadata'),
    ('bad_class', "cannot be used: it holds / or"),
    ('duplicate_class', 'the same name twice'),
    ('huge_linear', 'from 1 to 100000'),
    ('wrong_linear', 'the architecture needs'),
    ('unknown_arch', 'is not a network this timm'),
    ('unknown_arch_v1', 'arch must be one of'),
    ('forbidden_argument', "model argument 'checkpoint_path' is not allowed"),
    ('unknown_step', "unknown transform 'exec'"),
    ('huge_size', 'size must be a whole number'),
    ('newer_format', f'this imgclf reads versions 1 to {FORMAT_VERSION}'),
])
def test_bad_model_files_are_refused_naming_the_file(case, message, trained, tmp_path):
    from imgclf.core import ImgclfError
    from imgclf.model import load_model
    from imgclf.export import load_classifier
    good = trained[1].read_bytes()
    n = struct.unpack('<Q', good[:8])[0]
    meta = json.loads(json.loads(good[8:8+n])['__metadata__']['imgclf'])
    lin = next(i for i, l in enumerate(meta['head']) if l['layer'] == 'Linear')
    data = {'text': lambda: b'hello',
            'truncated': lambda: good[:len(good)//2],
            'huge_header': lambda: struct.pack('<Q', 2**62) + good[8:],
            'header_not_json': lambda: struct.pack('<Q', 16) + b'\xff' * 16 + good[24:],
            'no_metadata': lambda: struct.pack('<Q', 8) + b'{}      ',
            'bad_class': lambda: _with_meta(good, classes=meta['classes'][:4] + ['a/b']),
            'duplicate_class': lambda: _with_meta(good, classes=meta['classes'][:4] + [meta['classes'][0]]),
            'huge_linear': lambda: _with_meta(good, head=_head(meta['head'], lin, **{'in': 10**9})),
            'wrong_linear': lambda: _with_meta(good, head=_head(meta['head'], lin, out=7)),
            'unknown_arch': lambda: _with_meta(good, arch='__import__("os")'),
            'unknown_arch_v1': lambda: _with_meta(good, format_version=1, arch='convnext_tiny'),
            'forbidden_argument': lambda: _with_meta(good, timm={**meta['timm'], 'model_args': {'checkpoint_path': '/etc/passwd'}}),
            'unknown_step': lambda: _with_meta(good, transforms=[dict(op='exec', code='1')]),
            'huge_size': lambda: _with_meta(good, size=10**9),
            'newer_format': lambda: _with_meta(good, format_version=FORMAT_VERSION + 1)}[case]()
    bad = tmp_path/f'{case}.safetensors'
    bad.write_bytes(data)
    for load in (load_model, load_classifier):
        with pytest.raises(ImgclfError) as e: load(bad)
        assert str(bad) in str(e.value) and message in str(e.value), str(e.value)


def test_a_version_1_file_still_loads(trained, imgclf_home, tmp_path):
    "Files written before the `timm` record (format version 1, one of three bodies) load and predict as before"
    from imgclf.model import load_model
    from imgclf.core import image_files
    good = trained[1].read_bytes()
    n = struct.unpack('<Q', good[:8])[0]
    meta = json.loads(json.loads(good[8:8+n])['__metadata__']['imgclf'])
    old = {k: v for k, v in meta.items() if k != 'timm'}
    hdr = json.loads(good[8:8+n]); hdr['__metadata__']['imgclf'] = json.dumps(dict(old, format_version=1))
    h = json.dumps(hdr).encode(); h += b' ' * (-len(h) % 8)
    (tmp_path/'v1.safetensors').write_bytes(struct.pack('<Q', len(h)) + h + good[8+n:])
    photo = image_files(Path(imgclf_home)/'flowers'/'rose')[0]
    assert load_model(tmp_path/'v1.safetensors').predict(photo).probs == load_model(trained[1]).predict(photo).probs
