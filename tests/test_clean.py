"`apply_changes` and `undo_changes` under stress: crashes halfway, name clashes, repeated undo, conflicts; and `apply_cleaner` on fastai's own cleaner, which may act only on the files it drew."
import hashlib, json
from pathlib import Path
import pytest
from PIL import Image
import imgclf.changes as clean
from imgclf.changes import apply_changes, undo_changes, dataset_changes, TRASH
from imgclf.clean import apply_cleaner
from imgclf.core import ImgclfError, image_files, scan_dataset


@pytest.fixture
def ds(tmp_path):
    "A dataset of tiny distinct PNGs: classes a, b, c; a/x.png and b/x.png share a name on purpose"
    root = tmp_path/'ds'
    colours = iter(range(10, 250, 7))
    for cls, names in dict(a=['a0', 'a1', 'a2', 'a3', 'x'], b=['b0', 'b1', 'x', 'x_1'], c=['c0', 'c1']).items():
        (root/cls).mkdir(parents=True)
        for n in names: Image.new('RGB', (8, 8), (next(colours), 0, 0)).save(root/cls/f'{n}.png')
    return root


def snapshot(root):
    "Every visible file with a hash of its content: what the user would see"
    return {f.relative_to(root).as_posix(): hashlib.sha1(f.read_bytes()).hexdigest() for f in image_files(root)}


def everything(root):
    "Every file under root, trash included, by content hash -> count (to prove nothing was lost or duplicated)"
    out = {}
    for f in root.rglob('*.png'):
        h = hashlib.sha1(f.read_bytes()).hexdigest(); out[h] = out.get(h, 0) + 1
    return out


def test_roundtrip_restores_bytes_and_names(ds):
    before, all_before = snapshot(ds), everything(ds)
    log = apply_changes(ds, deletes=[ds/'a'/'a0.png', 'b/b0.png'], relabels=[(ds/'a'/'a1.png', 'c'), (ds/'c'/'c0.png', 'a')])
    after = snapshot(ds)
    assert 'a/a0.png' not in after and 'b/b0.png' not in after
    assert after['c/a1.png'] == before['a/a1.png'] and after['a/c0.png'] == before['c/c0.png']
    assert everything(ds) == all_before  # moved, never copied or lost
    assert log.parent.parent == ds/TRASH and (log.parent/'a'/'a0.png').exists()
    assert scan_dataset(ds).counts == {'a': 4, 'b': 3, 'c': 2}
    undo_changes(log)
    assert snapshot(ds) == before and everything(ds) == all_before


def test_name_collisions_never_overwrite(ds):
    # a/x.png and c/x.png into b, where x.png and x_1.png exist
    Image.new('RGB', (8, 8), 'blue').save(ds/'c'/'x.png')
    before, all_before = snapshot(ds), everything(ds)
    log = apply_changes(ds, relabels=[(ds/'a'/'x.png', 'b'), (ds/'c'/'x.png', 'b')])
    after = snapshot(ds)
    assert after['b/x.png'] == before['b/x.png'] and after['b/x_1.png'] == before['b/x_1.png']
    assert after['b/x_2.png'] == before['a/x.png'] and after['b/x_3.png'] == before['c/x.png']
    assert everything(ds) == all_before
    # two files of the same name deleted in one session keep their class folder in the trash
    log2 = apply_changes(ds, deletes=[ds/'b'/'x.png', ds/'b'/'x_1.png'])
    assert (log2.parent/'b'/'x.png').exists() and (log2.parent/'b'/'x_1.png').exists()
    undo_changes(log2); undo_changes(log)
    assert snapshot(ds) == before and everything(ds) == all_before


def test_same_name_from_two_classes_into_a_new_class(ds):
    before = snapshot(ds)
    log = apply_changes(ds, relabels=[(ds/'a'/'x.png', 'd'), (ds/'b'/'x.png', 'd')], create_classes=True)
    assert sorted(p.name for p in (ds/'d').iterdir()) == ['x.png', 'x_1.png']
    assert [c.op for c in dataset_changes(log).changes] == ['mkdir', 'relabel', 'relabel']
    undo_changes(log)
    assert snapshot(ds) == before and not (ds/'d').exists()


@pytest.mark.parametrize('fail_at', [1, 3, 5])
def test_crash_halfway_is_consistent_and_undoable(ds, monkeypatch, fail_at):
    before, all_before = snapshot(ds), everything(ds)
    real, calls = clean._move, []
    def flaky(src, dst):
        calls.append(src)
        if len(calls) == fail_at: raise OSError('disk on fire')
        real(src, dst)
    monkeypatch.setattr(clean, '_move', flaky)
    deletes = [ds/'a'/f'a{i}.png' for i in range(3)]
    relabels = [(ds/'b'/'b0.png', 'c'), (ds/'b'/'b1.png', 'a')]
    with pytest.raises(ImgclfError, match=f'Stopped after {fail_at-1} of 5 moves') as e:
        apply_changes(ds, deletes, relabels)
    assert 'undo_changes' in str(e.value)
    monkeypatch.setattr(clean, '_move', real)
    log = next((ds/TRASH).glob('*/changes.jsonl'))
    # the log holds every move that was started; exactly those before the failure happened
    status = [c.status for c in dataset_changes(log).changes]
    assert status == ['done']*(fail_at-1) + ['not done']
    assert everything(ds) == all_before  # every photo exists exactly once
    undo_changes(log)
    assert snapshot(ds) == before and everything(ds) == all_before


def test_killed_between_log_and_move(ds, monkeypatch):
    "A KeyboardInterrupt (not an Exception) after the log line is written: the move never happened"
    before = snapshot(ds)
    def killed(src, dst): raise KeyboardInterrupt
    monkeypatch.setattr(clean, '_move', killed)
    with pytest.raises(KeyboardInterrupt): apply_changes(ds, deletes=[ds/'a'/'a0.png'])
    monkeypatch.undo()
    log = next((ds/TRASH).glob('*/changes.jsonl'))
    assert [c.status for c in dataset_changes(log).changes] == ['not done']
    undo_changes(log)
    assert snapshot(ds) == before


def test_half_written_last_line_is_ignored(ds):
    before = snapshot(ds)
    log = apply_changes(ds, deletes=[ds/'a'/'a0.png', ds/'a'/'a1.png'])
    with open(log, 'a') as f: f.write('{"op": "delete", "src": "a/a2.p')  # the process died mid-write
    assert len(dataset_changes(log).changes) == 2
    undo_changes(log)
    assert snapshot(ds) == before
    assert 'a2.p' not in log.read_text() and log.read_text().endswith('\n')  # the torn line was dropped
    # a broken line that is not the last one means the log was edited: refuse to guess
    lines = log.read_text().split('\n')
    log.write_text('\n'.join(lines[:1] + ['garbage'] + lines[1:]))
    with pytest.raises(ImgclfError, match='line 2 is not a change record'): undo_changes(log)


def test_undo_twice_is_harmless(ds):
    before = snapshot(ds)
    log = apply_changes(ds, deletes=[ds/'a'/'a0.png'], relabels=[(ds/'b'/'b0.png', 'c')])
    first = undo_changes(log)
    second = undo_changes(log)
    assert snapshot(ds) == before
    assert [c.status for c in first.changes] == [c.status for c in second.changes] == ['not done', 'not done']
    undos = [json.loads(l) for l in log.read_text().splitlines() if '"undo"' in l]
    assert [u['restored'] for u in undos] == [2, 0]
    assert 'undone' in repr(second)


def test_undo_never_overwrites_a_new_file(ds):
    log = apply_changes(ds, deletes=[ds/'a'/'a0.png', ds/'a'/'a1.png'])
    Image.new('RGB', (8, 8), 'green').save(ds/'a'/'a0.png')  # the user made a new a0.png meanwhile
    new = (ds/'a'/'a0.png').read_bytes()
    with pytest.raises(ImgclfError, match='a0.png exists again') as e: undo_changes(log)
    assert 'Restored 1 file' in str(e.value)
    assert (ds/'a'/'a1.png').exists()  # the other file came back
    assert (ds/'a'/'a0.png').read_bytes() == new and (log.parent/'a'/'a0.png').exists()  # both kept


def test_undo_reports_files_removed_by_hand(ds):
    log = apply_changes(ds, deletes=[ds/'a'/'a0.png', ds/'a'/'a1.png'])
    (log.parent/'a'/'a0.png').unlink()
    with pytest.raises(ImgclfError, match='a/a0.png is neither at'): undo_changes(log)
    assert (ds/'a'/'a1.png').exists()
    assert [c.status for c in dataset_changes(log).changes] == ['missing', 'not done']


def test_created_class_folder_kept_if_not_empty(ds):
    log = apply_changes(ds, relabels=[(ds/'a'/'a0.png', 'new')], create_classes=True)
    Image.new('RGB', (8, 8), 'white').save(ds/'new'/'mine.png')
    undo_changes(log)
    assert (ds/'a'/'a0.png').exists() and (ds/'new'/'mine.png').exists()


def test_bad_requests_change_nothing(ds, tmp_path):
    before = snapshot(ds)
    outside = tmp_path/'elsewhere.png'; Image.new('RGB', (8, 8)).save(outside)
    (ds/'loose.png').write_bytes(outside.read_bytes())
    cases = [
        (dict(deletes=[outside]), 'is not in the dataset'),
        (dict(deletes=[ds/'a'/'nope.png']), 'File not found'),
        (dict(deletes=[ds/'a']), 'is a folder'),
        (dict(deletes=[ds/'loose.png']), 'not inside a class folder'),
        (dict(relabels=[(ds/'a'/'a0.png', 'zebra')]), "Unknown class 'zebra' for"),
        (dict(relabels=[(ds/'a'/'a0.png', '.trash')], create_classes=True), 'cannot be a class name'),
        (dict(relabels=[(ds/'a'/'a0.png', 'a/b')], create_classes=True), 'cannot be a class name'),
        (dict(deletes=['a/a0.png', ds/'a'/'a0.png']), 'listed twice'),
        (dict(deletes=[ds/'a'/'..'/'..'/'elsewhere.png']), 'is not in the dataset'),
    ]
    for kw, msg in cases:
        with pytest.raises(ImgclfError, match=msg): apply_changes(ds, **kw)
    log = apply_changes(ds, deletes=[ds/'a'/'a0.png'])
    with pytest.raises(ImgclfError, match='inside a hidden folder'): apply_changes(ds, deletes=[log.parent/'a'/'a0.png'])
    undo_changes(log)
    (ds/'loose.png').unlink()
    assert snapshot(ds) == before
    assert apply_changes(ds, relabels=[(ds/'a'/'a0.png', 'a')]) is None  # already in that class


def test_tampered_log_cannot_reach_outside(ds):
    log = apply_changes(ds, deletes=[ds/'a'/'a0.png'])
    with open(log, 'a') as f: f.write(json.dumps(dict(op='delete', src='../../etc/passwd', dst='x')) + '\n')
    with pytest.raises(ImgclfError, match='outside the dataset'): undo_changes(log)


def test_dataset_changes_lists_every_session(ds):
    log1 = apply_changes(ds, deletes=[ds/'a'/'a0.png'])
    log2 = apply_changes(ds, relabels=[(ds/'b'/'b0.png', 'c')])
    ch = dataset_changes(ds)
    assert [l for l, _, _ in ch.sessions] == [log1, log2]
    assert ch.deleted == ['a/a0.png'] and ch.relabelled == [('b/b0.png', 'c/b0.png')]
    r = repr(ch)
    assert r.startswith(f'{ds}: 2 file(s) moved in 2 session(s)')
    assert 'a/a0.png' in r and 'b/b0.png -> c/b0.png' in r and '[done]' in r
    undo_changes(log2); undo_changes(log1)
    assert '0 file(s) moved' in repr(dataset_changes(ds))


def fastai_cleaner(monkeypatch, root, losses):
    "fastai's `ImageClassifierCleaner` over `root`, its learner's predictions replaced by `losses` (file name -> loss)"
    import fastai.vision.widgets as fw
    from fastcore.foundation import L
    from types import SimpleNamespace
    from IPython.display import display
    monkeypatch.setattr(fw, 'display', display, raising=False)  # in a notebook IPython gives fastai's `widget` this builtin
    info = L([(f, f.parent.name, losses[f.name]) for f in image_files(root)])
    monkeypatch.setattr(fw, '_get_iw_info', lambda learn, ds_idx=0: info if ds_idx == 0 else L())
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith('.'))
    return fw.ImageClassifierCleaner(SimpleNamespace(dls=SimpleNamespace(vocab=classes)))


def menus(cl): return [box.children[1] for box in cl.iw.widget.children]

# in class a, a0 is shown first; in class b, a relabelled a0 would come last
LOSSES = {'a0.png': 0.5, 'a1.png': 0.4, 'a2.png': 0.35, 'a3.png': 0.3, 'x.png': 0.2, 'b0.png': 0.9, 'b1.png': 0.8, 'x_1.png': 0.6,
          'c0.png': 0.5, 'c1.png': 0.4}


def test_fastai_cleaner_after_undo_changes_no_unseen_file(ds, monkeypatch):
    "Relabel the first picture, apply, undo, switch class, mark <Delete> on a tile, apply: no file the user did not see changes"
    cl = fastai_cleaner(monkeypatch, ds, LOSSES)
    assert cl.dd_cats.value == 'a' and cl.fns[0] == ds/'a'/'a0.png'
    menus(cl)[0].value = 'b'
    log = apply_cleaner(cl, ds)
    assert dataset_changes(log).relabelled == [('a/a0.png', 'b/a0.png')]
    undo_changes(log)
    before, all_before = snapshot(ds), everything(ds)
    shown = [Path(f) for f in cl.fns]  # the pictures on screen: class a, without a0
    with pytest.raises(FileNotFoundError): cl.dd_cats.value = 'b'  # fastai's lists still name b/a0.png, which the undo moved back
    assert cl.fns[0] == ds/'b'/'b0.png' and len(cl.iw.widget.children) == len(shown)  # class b's list, class a's tiles
    menus(cl)[0].value = '<Delete>'  # on the tile that shows a1.png
    with pytest.raises(ImgclfError, match='Nothing was changed') as e: apply_cleaner(cl, ds)
    assert str(ds/'b'/'b0.png') in str(e.value) and 'ImageClassifierCleaner(learn)' in str(e.value)
    assert snapshot(ds) == before and everything(ds) == all_before and not dataset_changes(ds).deleted
    cl = fastai_cleaner(monkeypatch, ds, LOSSES)  # built again, as the lesson does after an undo
    cl.dd_cats.value = 'b'
    menus(cl)[0].value = '<Delete>'
    log = apply_cleaner(cl, ds)
    assert dataset_changes(log).deleted == ['b/b0.png'] and cl.iw.shown['fns'] == list(cl.fns)


def test_fastai_cleaner_refuses_a_file_changed_or_gone_since_shown(ds, monkeypatch):
    cl = fastai_cleaner(monkeypatch, ds, LOSSES)
    menus(cl)[0].value, menus(cl)[1].value = 'c', '<Delete>'
    Image.new('RGB', (8, 8), 'blue').save(ds/'a'/'a0.png')  # another picture under the shown name
    before, all_before = snapshot(ds), everything(ds)
    with pytest.raises(ImgclfError, match=f'{ds/"a"/"a0.png"}: changed since it was shown'): apply_cleaner(cl, ds)
    assert snapshot(ds) == before and everything(ds) == all_before
    (ds/'a'/'a0.png').unlink()
    with pytest.raises(ImgclfError, match=f'{ds/"a"/"a0.png"}: not there any more'): apply_cleaner(cl, ds)
    assert (ds/'a'/'a1.png').exists() and not (ds/TRASH).exists()


def test_fastai_cleaner_needs_to_have_drawn(ds, monkeypatch):
    "A cleaner whose tiles were drawn before imgclf noted them (or whose drawing failed) is refused"
    cl = fastai_cleaner(monkeypatch, ds, LOSSES)
    cl.iw.shown = None
    menus(cl)[0].value = '<Delete>'
    with pytest.raises(ImgclfError, match='does not show the photos it would act on'): apply_cleaner(cl, ds)
    assert (ds/'a'/'a0.png').exists()


def test_apply_cleaner_uses_marks_and_refreshes(ds, monkeypatch):
    before = snapshot(ds)
    cl = fastai_cleaner(monkeypatch, ds, LOSSES)
    assert [f.name for f in cl.fns] == ['a0.png', 'a1.png', 'a2.png', 'a3.png', 'x.png']
    for m, v in zip(menus(cl), ['<Delete>', '<Keep>', 'b', '<Keep>', 'b']): m.value = v
    log = apply_cleaner(cl, ds)
    ch = dataset_changes(log)
    assert ch.deleted == ['a/a0.png'] and ch.relabelled == [('a/a2.png', 'b/a2.png'), ('a/x.png', 'b/x_2.png')]
    listed = {Path(f).relative_to(ds).as_posix(): y for f, y, _ in cl.iwis[0] if y in ('a', 'b')}
    assert listed == {'a/a1.png': 'a', 'b/a2.png': 'b', 'a/a3.png': 'a', 'b/x_2.png': 'b', 'b/b0.png': 'b', 'b/b1.png': 'b',
                      'b/x.png': 'b', 'b/x_1.png': 'b'}
    assert [f.name for f in cl.fns] == ['a1.png', 'a3.png'] and cl.iw.shown['fns'] == list(cl.fns)  # drawn again
    assert list(cl.delete()) == [] and apply_cleaner(cl, ds) is None
    undo_changes(log)
    assert snapshot(ds) == before


def test_fastai_cleaner_whose_lists_changed_since_drawn_is_refused(ds, monkeypatch):
    "Tiles drawn from lists that have changed since (its class now lists other files): nothing is acted on"
    from fastcore.foundation import L
    cl = fastai_cleaner(monkeypatch, ds, LOSSES)
    cl.iwis = (L(o for o in cl.iwis[0] if o[0].name != 'a1.png'), cl.iwis[1])  # a1 gone from the lists, still on a tile
    menus(cl)[0].value = '<Delete>'
    with pytest.raises(ImgclfError, match=f"not those of a \\(Train\\) now, and would act on {ds/'a'/'a0.png'}"): apply_cleaner(cl, ds)
    assert (ds/'a'/'a0.png').exists() and not (ds/TRASH).exists()


def test_merge_predictions_takes_the_folder_as_predict_folder_does(ds, monkeypatch):
    "`predict_folder` expands `~` in the folder it is given; `merge_predictions` given the same folder finds its files"
    import pandas as pd
    from imgclf.cleaner import merge_predictions
    monkeypatch.setenv('HOME', str(ds.parent))
    ranked = pd.DataFrame(dict(file=['a/a0.png', 'b/b0.png', 'c/c0.png']))
    got = pd.DataFrame(dict(file=[str(ds/'a'/'a0.png'), str(ds/'b'/'b0.png')], label=['b', float('nan')], probability=[0.9, float('nan')],
                            error=['', 'not an image']))
    for folder in ('~/ds', ds):
        m = merge_predictions(ranked, got, folder)
        assert m.model_label.tolist() == ['b', '', ''] and m.model_probability.isna().tolist() == [False, True, True]


def test_cleaner_view_of_a_file_gone_or_broken_says_which_and_why(ds):
    "The cleaner's *view* of a picture that is no longer there, or is no picture, says so as it always has: `file: reason`"
    import pandas as pd
    from imgclf.cleaner import Cleaner, Choices
    rel = [f.relative_to(ds).as_posix() for f in image_files(ds)]
    ranked = pd.DataFrame(dict(file=rel, label=[f.split('/')[0] for f in rel], suggested='', score=0., reason='', p_label=1., p_suggested=0.,
                               outlier_z=0., flagged=False, duplicate_of='', kind='', phash='', sha=''))
    cl = Cleaner(ds, ranked, choices=Choices(ds, autosave=False))
    (ds/'a'/'a0.png').unlink()
    (ds/'a'/'a1.png').write_bytes(b'<html>not found</html>')
    cl._enlarge('a/a0.png')
    assert cl.msg.value == 'a/a0.png: unreadable: No such file or directory' and cl.big_box.layout.display == 'none'
    cl._enlarge('a/a1.png')
    assert cl.msg.value == 'a/a1.png: not an image: HTML page'
    cl._enlarge('a/a2.png')
    assert cl.big_box.layout.display == '' and cl.big.value[:2] == b'\xff\xd8'  # a JPEG of the picture
