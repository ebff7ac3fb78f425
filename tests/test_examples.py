"Example photos beside a model: written whole or not at all, read back safely, chosen at export from photos the model gets right."
import csv, logging, shutil
from pathlib import Path
import pandas as pd
import pytest
from PIL import Image
from imgclf.modelfile import Example, examples_folder, read_examples, write_examples
from imgclf import modelfile

FLOWERS = ['daisy', 'dandelion', 'rose', 'sunflower', 'tulip']


def _photos(folder:Path) -> list[Path]:
    "Three pictures of different sizes and formats"
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name, size, colour in [('wide.png', (1000, 700), 'red'), ('tall.jpg', (300, 900), 'blue'), ('tiny.png', (60, 40), 'green')]:
        Image.new('RGB', size, colour).save(folder/name)
        out.append(folder/name)
    return out


def test_written_examples_read_back_in_order_small_jpegs_with_their_credits(tmp_path):
    wide, tall, tiny = _photos(tmp_path/'in')
    model = tmp_path/'out'/'shapes.safetensors'
    written = write_examples(model, [(wide, 'red', 'CC BY 2.0', 'Ann', 'https://example.org/wide'), (tall, 'blue'),
                                     (tiny, 'red', 'CC0 1.0')], size=128)
    got = read_examples(model)
    assert got == written
    assert [(e.path.name, e.label, e.licence, e.author, e.source_page) for e in got] == [
        ('red-1.jpg', 'red', 'CC BY 2.0', 'Ann', 'https://example.org/wide'), ('blue-1.jpg', 'blue', '', '', ''),
        ('red-2.jpg', 'red', 'CC0 1.0', '', '')]
    assert all(e.path.parent == examples_folder(model) == tmp_path/'out'/'shapes.examples' for e in got)
    for e, want in zip(got, [(128, 90), (43, 128), (60, 40)]):
        with Image.open(e.path) as im: assert (im.format, im.size) == ('JPEG', want)
    assert sorted(p.name for p in (tmp_path/'out').iterdir()) == ['shapes.examples']  # nothing temporary left


def test_no_folder_or_no_model_means_no_examples(tmp_path):
    assert read_examples(None) == []
    assert read_examples(tmp_path/'nothing.safetensors') == []
    examples_folder(tmp_path/'empty.pkl').mkdir()
    assert read_examples(tmp_path/'empty.pkl') == []


@pytest.mark.parametrize('content', [b'\xff\xfe\x00\x81 not text', b'name,label\nred-1.jpg,red\n', b'file,class\n"red-1.jpg,red\n'],
                         ids=['not-utf8', 'wrong-columns', 'broken-quote'])
def test_a_damaged_list_is_a_warning_naming_it_and_no_examples(content, tmp_path, caplog):
    wide, *_ = _photos(tmp_path/'in')
    model = tmp_path/'m.safetensors'
    write_examples(model, [(wide, 'red')])
    listing = examples_folder(model)/'examples.csv'
    listing.write_bytes(content)
    with caplog.at_level(logging.WARNING, 'imgclf.modelfile'): assert read_examples(model) == []
    assert [r.levelname for r in caplog.records] == ['WARNING'] and str(listing) in caplog.records[0].getMessage()


def test_rows_of_missing_photos_or_of_files_outside_the_folder_are_left_out(tmp_path):
    wide, tall, _ = _photos(tmp_path/'in')
    model = tmp_path/'m.safetensors'
    write_examples(model, [(wide, 'red'), (tall, 'blue')])
    folder = examples_folder(model)
    (folder/'red-1.jpg').unlink()
    (folder/'link.jpg').symlink_to(wide)
    with open(folder/'examples.csv', 'a', newline='') as f:
        csv.writer(f).writerows([['../m.safetensors', 'red'], [str(wide), 'red'], ['link.jpg', 'red'], ['.hidden.jpg', 'red']])
    (folder/'.hidden.jpg').write_bytes((folder/'blue-1.jpg').read_bytes())
    assert read_examples(model) == [Example(folder/'blue-1.jpg', 'blue')]


def test_a_failure_halfway_leaves_the_old_examples_as_they_were(tmp_path, monkeypatch):
    wide, tall, tiny = _photos(tmp_path/'in')
    model = tmp_path/'m.safetensors'
    old = write_examples(model, [(wide, 'red', 'CC0 1.0')])
    before = {p.name: p.read_bytes() for p in examples_folder(model).iterdir()}
    real, calls = modelfile.thumbnail, []
    def second_fails(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2: raise OSError('disk full')
        return real(*args, **kwargs)
    monkeypatch.setattr(modelfile, 'thumbnail', second_fails)
    with pytest.raises(OSError, match='disk full'): write_examples(model, [(tall, 'blue'), (tiny, 'green'), (wide, 'red')])
    assert len(calls) == 2
    assert read_examples(model) == old
    assert {p.name: p.read_bytes() for p in examples_folder(model).iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ['in', 'm.examples']  # the half-made folder is gone


def test_a_new_set_replaces_the_old_one_whole(tmp_path):
    wide, tall, tiny = _photos(tmp_path/'in')
    model = tmp_path/'m.safetensors'
    write_examples(model, [(wide, 'red'), (tiny, 'red')])
    write_examples(model, [(tall, 'blue')])
    assert sorted(p.name for p in examples_folder(model).iterdir()) == ['blue-1.jpg', 'examples.csv']
    assert sorted(p.name for p in tmp_path.iterdir()) == ['in', 'm.examples']
    (tmp_path/'x.examples').write_text('a file of the user')
    with pytest.raises(Exception, match='x.examples is in the way'): write_examples(tmp_path/'x.safetensors', [(wide, 'red')])
    assert (tmp_path/'x.examples').read_text() == 'a file of the user'


def test_example_items_credit_the_built_in_photos_and_never_show_a_planted_problem(tmp_path):
    from imgclf.modelfile import example_items
    from imgclf.photos import photo_credits, planted_problems
    import imgclf
    package = Path(imgclf.__file__).parent/'flowers'
    credits = photo_credits()
    flowers = tmp_path/'flowers'
    (flowers/'rose').mkdir(parents=True)
    credits.to_csv(flowers/'attribution.csv', index=False)
    roses = ['rose/camera.jpg', 'rose/14278605962_d3cce5522f.jpg'] + [f for f in credits.file if f.startswith('rose/1')][:3]
    assert set(roses[:2]) <= set(planted_problems().file)
    for f in roses: shutil.copyfile(package/f, flowers/f)
    got = example_items({'rose': [flowers/f for f in roses]}, n=2)
    want = credits.set_index('file').loc[roses[2:4]]  # the first two that are no planted problem
    assert [(p, c, l, a) for p, c, l, a, _ in got] == [(flowers/f, 'rose', l, '') for f, l in zip(want.index, want.licence)]
    assert [s for *_, s in got] == list(want.source) and all(s.startswith('https://www.flickr.com/') for s in want.source)


# Export: a learner quickly trained on the built-in photos, as in test_model.py

@pytest.fixture(scope='module')
def trained(imgclf_home, tmp_path_factory):
    "A learner trained on the built-in photos and its export with the default examples"
    from imgclf.train import demo_learner, valid_predictions
    from imgclf.export import export_classifier
    learn = demo_learner(out=tmp_path_factory.mktemp('runs'))
    preds = valid_predictions(learn)
    path = export_classifier(learn, tmp_path_factory.mktemp('model')/'flowers.safetensors', name='flowers')
    return learn, preds, path


def test_export_saves_photos_of_each_class_the_model_gets_right_most_confident_first(trained):
    from imgclf.model import load_model
    from imgclf.photos import photo_credits, planted_problems
    learn, preds, path = trained
    got = read_examples(path)
    assert [e.label for e in got] == [c for c in FLOWERS for _ in range(2)]
    root = Path(preds.file[0]).parent.parent
    planted = set(planted_problems().file)
    credits = photo_credits(root)
    credits = {s: (f, l) for f, s, l in zip(credits.file, credits.source, credits.licence) if f not in planted}  # by Flickr page
    clf = load_model(path)
    for c in FLOWERS:
        mine = [e for e in got if e.label == c]
        files = [root/credits[e.source_page][0] for e in mine]
        assert all(e.licence == credits[e.source_page][1] and e.licence.startswith('CC BY 2.0') for e in mine)
        rows = preds.set_index('file').loc[[str(f) for f in files]]  # validation photos ...
        assert (rows.actual == c).all() and (rows.predicted == c).all()  # ... that the model gets right ...
        right = preds[(preds.actual == c) & (preds.predicted == c) & ~preds.file.isin([str(f) for f in files])]
        right = right[~right.file.map(lambda f: Path(f).relative_to(root).as_posix()).isin(planted)]
        assert len(right) > 0 and rows.probability.min() >= right.probability.max()  # ... the most confident first
        assert list(rows.probability) == sorted(rows.probability, reverse=True)
        assert not {f.relative_to(root).as_posix() for f in files} & planted
        assert [clf.predict(e.path).label for e in mine] == [c, c]  # the saved JPEGs too
        assert all(max(Image.open(e.path).size) <= 384 for e in mine)


def test_only_photos_the_model_gets_right_are_chosen_most_confident_first(trained, tmp_path, monkeypatch):
    "With the validation predictions set by hand: a wrong answer, however sure, is never an example; the surest right ones come first"
    from imgclf import export
    from imgclf.photos import photo_credits, planted_problems
    learn, preds, _ = trained
    planted = set(planted_problems().file)
    root = Path(preds.file[0]).parent.parent
    daisies = [f for f in preds.file[preds.actual == 'daisy'] if Path(f).relative_to(root).as_posix() not in planted][:4]
    table = pd.DataFrame(dict(file=daisies, actual='daisy', predicted=['rose', 'daisy', 'daisy', 'daisy'], probability=[0.99, 0.6, 0.9, 0.7]))
    monkeypatch.setattr(export, 'valid_predictions', lambda learn: table)
    got = read_examples(export.export_classifier(learn, tmp_path/'f.safetensors', examples=2))
    pages = photo_credits(root).set_index('file').source
    assert [e.source_page for e in got] == [pages[Path(daisies[i]).relative_to(root).as_posix()] for i in (2, 3)]
    assert [e.label for e in got] == ['daisy', 'daisy']


def test_the_demo_model_comes_with_built_in_photos_of_each_class(trained, tmp_path, monkeypatch):
    "`demo_model` exports through `export_classifier` (its training is the `trained` learner, to save a second training)"
    from imgclf import export
    learn, _, _ = trained
    monkeypatch.setattr(export, 'demo_learner', lambda out=None: learn)
    model = export.demo_model(tmp_path/'flowers.safetensors')
    got = read_examples(model)
    assert sorted({e.label for e in got}) == FLOWERS and len(got) == 10
    assert all(e.source_page.startswith('https://www.flickr.com/') for e in got)


def test_imgclf_demo_writes_examples_beside_its_model(demo_run):
    proc, out = demo_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = read_examples(out/'model.safetensors')
    assert [e.label for e in got] == [c for c in FLOWERS for _ in range(2)]
    assert all(e.licence.startswith('CC BY 2.0') for e in got)


def test_examples_0_removes_an_old_models_examples_and_a_pickle_gets_them_too(trained, tmp_path):
    from imgclf.export import export_classifier
    learn, _, _ = trained
    model = export_classifier(learn, tmp_path/'f.safetensors', examples=1)
    assert [e.label for e in read_examples(model)] == FLOWERS
    export_classifier(learn, model, examples=0)
    assert model.is_file() and not examples_folder(model).exists() and read_examples(model) == []
    pkl = export_classifier(learn, tmp_path/'p.pkl', pickle=True, examples=1)
    assert [e.label for e in read_examples(pkl)] == FLOWERS
    assert sorted(p.name for p in tmp_path.iterdir()) == ['f.safetensors', 'p.examples', 'p.pkl']


def test_a_learner_without_its_photos_removes_old_examples_on_export(trained, tmp_path):
    "A pickle loaded again has no validation photos (`imgclf export model.pkl`): nothing to show, and an older model's examples go"
    from fastai.learner import load_learner
    from imgclf.export import export_classifier
    learn, _, path = trained
    shutil.copytree(examples_folder(path), examples_folder(tmp_path/'f.safetensors'))
    pkl = export_classifier(learn, tmp_path/'f.pkl', pickle=True, examples=0)
    model = export_classifier(load_learner(pkl), tmp_path/'f.safetensors')
    assert read_examples(model) == [] and not examples_folder(model).exists()


def test_a_gathered_dataset_gives_its_photos_the_licences_of_its_manifest(imgclf_home, tmp_path):
    "Photos stored as `gather` stores them, with a manifest: each example's credits are those of its photo's row"
    import hashlib
    from imgclf.manifest import write_manifest
    from imgclf.photos import flower_photos, planted_problems
    from imgclf.train import train_classifier, valid_predictions
    from imgclf.export import export_classifier
    data, rows, src, planted = tmp_path/'data', [], flower_photos(), set(planted_problems().file)
    for c in ('daisy', 'sunflower'):
        (data/c).mkdir(parents=True)
        for i, f in enumerate([f for f in sorted((src/c).glob('*.jpg')) if f'{c}/{f.name}' not in planted][:15]):
            sha = hashlib.sha256(f.read_bytes()).hexdigest()
            shutil.copyfile(f, data/c/f'{sha[:16]}.jpg')
            rows.append({'class': c, 'url': f'https://example.org/{c}/{i}.jpg', 'status': 'kept', 'file': f'{c}/{sha[:16]}.jpg',
                         'sha': sha, 'licence': f'licence {c} {i}', 'author': f'author {c} {i}', 'source_page': f'https://example.org/{c}/{i}'})
    write_manifest(data/'manifest.csv', rows)
    learn = train_classifier(data, recipe='linear', size=64, out=tmp_path/'run', quiet=True)
    preds = valid_predictions(learn)
    right = set(preds.file[preds.actual == preds.predicted])
    got = read_examples(export_classifier(learn, tmp_path/'m.safetensors', examples=3))
    by_page = {r['source_page']: r for r in rows}
    assert {e.label for e in got} == {'daisy', 'sunflower'}
    for e in got:
        assert e.source_page in by_page, e
        r = by_page[e.source_page]
        assert (e.label, e.licence, e.author) == (r['class'], r['licence'], r['author'])
        assert str(data/r['file']) in right
