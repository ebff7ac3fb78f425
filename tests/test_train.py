"Backbones whose weights must be downloaded fail clearly without a network, and never touch the user's files."
import urllib.error
import pytest
import torch.hub
from imgclf.core import ImgclfError, lfw_faces
from imgclf.data import image_dls
from imgclf.train import make_learner, FASTAI_ARCHS


@pytest.mark.parametrize('arch', ['resnet18', 'resnet34'])
def test_downloaded_backbone_offline_is_a_clear_error(arch, imgclf_home, tmp_path, monkeypatch):
    def no_network(url, *args, **kwargs): raise urllib.error.URLError('[Errno -3] Temporary failure in name resolution')
    monkeypatch.setattr(torch.hub, 'load_state_dict_from_url', no_network)
    monkeypatch.setenv('TORCH_HOME', str(tmp_path/'torch'))  # no cached weights
    dls = image_dls(lfw_faces(), size=32, bs=8)
    with pytest.raises(ImgclfError) as e: make_learner(dls, arch, out=tmp_path/'run')
    msg = str(e.value)
    assert f'Could not get the ImageNet weights of {arch} from {FASTAI_ARCHS[arch]["url"]}' in msg
    assert 'efficientnet_lite0' in msg


def test_unknown_backbone_names_close_ones(imgclf_home, tmp_path):
    dls = image_dls(lfw_faces(), size=32, bs=8)
    with pytest.raises(ImgclfError, match="Unknown backbone 'resnet5O': not one of efficientnet_lite0, resnet18, resnet34 nor a timm model name; close names: resnet50"):
        make_learner(dls, 'resnet5O', out=tmp_path)
    with pytest.raises(ImgclfError, match="timm has no pretrained weights for 'resnet50.nope'; it has: resnet50.a1_in1k"):
        make_learner(dls, 'resnet50.nope', out=tmp_path)


def test_timm_backbone_offline_is_a_clear_error(imgclf_home, tmp_path, monkeypatch):
    "A timm name whose weights are on the Hugging Face hub, with the hub unreachable and nothing cached"
    import timm.models._hub as hub
    from huggingface_hub.errors import LocalEntryNotFoundError
    def no_network(*args, **kwargs): raise LocalEntryNotFoundError('An error happened while trying to locate the file on the Hub')
    monkeypatch.setattr(hub, 'hf_hub_download', no_network)
    with pytest.raises(ImgclfError) as e: make_learner(image_dls(lfw_faces(), size=32, bs=8), 'test_resnet', out=tmp_path)
    msg = str(e.value)
    assert msg.startswith('Could not get the pretrained weights of test_resnet from ') and '\n' not in msg
    assert 'Connect to the internet once' in msg and 'efficientnet_lite0' in msg


def test_offline_backbone_builds_without_network(imgclf_home, tmp_path, monkeypatch):
    def no_network(url, *args, **kwargs): raise AssertionError(f'tried to download {url}')
    monkeypatch.setattr(torch.hub, 'load_state_dict_from_url', no_network)
    learn = make_learner(image_dls(lfw_faces(), size=32, bs=8), 'efficientnet_lite0', out=tmp_path)
    assert learn.dls.c == 2 and len(learn.opt.param_groups) == 3


def test_progress_in_a_log_is_one_line_per_epoch_and_quiet_is_silent(imgclf_home, tmp_path, capsys):
    "Output that is not a terminal (a log, CI) gets plain lines, no progress bar; `quiet=True` prints nothing at all"
    from imgclf.train import train_classifier
    train_classifier(lfw_faces(), recipe='fine_tune', size=32, epochs=1, lr=1e-3, out=tmp_path, quiet=True)
    out = capsys.readouterr()
    assert out.out == '' and '%' not in out.err and '\r' not in out.err
    train_classifier(lfw_faces(), recipe='fine_tune', size=32, epochs=1, lr=1e-3, out=tmp_path)
    out = capsys.readouterr()
    lines = out.out.splitlines()
    assert '\r' not in out.out + out.err and '|' not in out.out + out.err  # no bar drawn, not even one frame
    header = ['epoch', 'train_loss', 'valid_loss', 'error_rate', 'accuracy', 'time']
    assert [l.split() for l in lines[0::2]] == [header, header]  # fine_tune: the head's epoch, then the whole network's
    assert [l.split()[0] for l in lines[1::2]] == ['0', '0'] and len(lines) == 4
    assert all(0 <= float(v) for l in lines[1::2] for v in l.split()[1:5])


def test_training_reads_pictures_once_and_upright(imgclf_home, tmp_path):
    "A second training finds every picture in the presize cache (no decoding); a sideways phone photo is cached upright"
    import numpy as np
    from PIL import Image
    from imgclf.data import PresizeCache, presize_for
    from imgclf.train import train_classifier
    data = tmp_path/'data'
    rng = np.random.default_rng(0)
    for c in ('a', 'b'):
        (data/c).mkdir(parents=True)
        for i in range(6): Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(data/c/f'{i}.png')
    up = Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8))
    exif = Image.Exif(); exif[0x0112] = 6
    up.transpose(Image.Transpose.ROTATE_90).save(data/'a'/'phone.png', exif=exif)
    train_classifier(data, recipe='fine_tune', size=32, epochs=1, lr=1e-3, out=tmp_path/'run', quiet=True)
    cache = PresizeCache(presize_for(32))
    cached = cache.get(data/'a'/'phone.png')
    assert cached.shape == (40, 60, 3)  # upright: wider than high, as the photo is meant to be seen
    made = []
    orig = PresizeCache.make
    try:
        PresizeCache.make = lambda self, f: made.append(f) or orig(self, f)
        train_classifier(data, recipe='fine_tune', size=32, epochs=1, lr=1e-3, out=tmp_path/'run', quiet=True)
    finally: PresizeCache.make = orig
    assert made == []


def test_two_processes_train_like_one(imgclf_home, tmp_path):
    "`imgclf train --processes 2` trains data-parallel on the CPU (gloo) and reaches the error of one process, within noise"
    import json, os, subprocess, sys
    from pathlib import Path
    from imgclf.photos import flower_photos
    from imgclf.train import train_classifier, valid_predictions
    data = flower_photos(tmp_path/'flowers')
    # one process, batches of 32; two processes, 16 each: the same batches and steps
    learn = train_classifier(data, recipe='fine_tune', size=96, epochs=2, lr=3e-3, bs=32, out=tmp_path/'one', quiet=True)
    preds = valid_predictions(learn)
    one = float((preds.actual != preds.predicted).mean())
    out = tmp_path/'two'
    exe = Path(sys.executable).parent/'imgclf'
    proc = subprocess.run([str(exe), 'train', str(data), '--recipe', 'fine_tune', '--processes', '2', '--size', '96', '--epochs', '2', '--lr', '3e-3',
                           '--bs', '16', '--out', str(out), '--quiet'], capture_output=True, text=True, timeout=600,
                          env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'Training in 2 processes' in proc.stderr and 'Training in' not in proc.stdout  # a progress line
    run = json.loads((out/'run.json').read_text())
    assert run['processes'] == 2 and len(run['vocab']) == 5
    assert (out/'classes.csv').is_file()
    print(f'error: one process {one:.2%}, two processes {run["error_rate"]:.2%}')
    assert one < 0.35 and run['error_rate'] < 0.35, (one, run['error_rate'])  # both learned (chance: 80% error)
    assert abs(run['error_rate'] - one) <= 0.12, (one, run['error_rate'])  # 81 validation photos: a photo is 1.2 points
