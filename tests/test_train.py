"Backbones whose weights must be downloaded fail clearly without a network, and never touch the user's files."
import urllib.error
import pytest
import torch.hub
from imgclf.core import ImgclfError, lfw_faces
from imgclf.data import image_dls
from imgclf.train import make_learner, BACKBONES


@pytest.mark.parametrize('arch', ['resnet18', 'resnet34'])
def test_downloaded_backbone_offline_is_a_clear_error(arch, imgclf_home, tmp_path, monkeypatch):
    def no_network(url, *args, **kwargs): raise urllib.error.URLError('[Errno -3] Temporary failure in name resolution')
    monkeypatch.setattr(torch.hub, 'load_state_dict_from_url', no_network)
    monkeypatch.setenv('TORCH_HOME', str(tmp_path/'torch'))  # no cached weights
    dls = image_dls(lfw_faces(), size=32, bs=8)
    with pytest.raises(ImgclfError) as e: make_learner(dls, arch, out=tmp_path/'run')
    msg = str(e.value)
    assert f'Could not get the ImageNet weights of {arch} from {BACKBONES[arch]["url"]}' in msg
    assert 'efficientnet_lite0' in msg


def test_unknown_backbone_lists_the_choices(imgclf_home, tmp_path):
    dls = image_dls(lfw_faces(), size=32, bs=8)
    with pytest.raises(ImgclfError, match="Unknown backbone 'vgg99'; choose one of: efficientnet_lite0, resnet18, resnet34"):
        make_learner(dls, 'vgg99', out=tmp_path)


def test_offline_backbone_builds_without_network(imgclf_home, tmp_path, monkeypatch):
    def no_network(url, *args, **kwargs): raise AssertionError(f'tried to download {url}')
    monkeypatch.setattr(torch.hub, 'load_state_dict_from_url', no_network)
    learn = make_learner(image_dls(lfw_faces(), size=32, bs=8), 'efficientnet_lite0', out=tmp_path)
    assert learn.dls.c == 2 and len(learn.opt.param_groups) == 3


def test_progress_in_a_log_is_one_line_per_epoch_and_quiet_is_silent(imgclf_home, tmp_path, capsys):
    "Output that is not a terminal (a log, CI) gets plain lines, no progress bar; `quiet=True` prints nothing at all"
    from imgclf.train import train_classifier
    train_classifier(lfw_faces(), size=32, epochs=1, lr=1e-3, out=tmp_path, quiet=True)
    out = capsys.readouterr()
    assert out.out == '' and '%' not in out.err and '\r' not in out.err
    train_classifier(lfw_faces(), size=32, epochs=1, lr=1e-3, out=tmp_path)
    out = capsys.readouterr()
    lines = out.out.splitlines()
    assert '\r' not in out.out + out.err and '|' not in out.out + out.err  # no bar drawn, not even one frame
    header = ['epoch', 'train_loss', 'valid_loss', 'error_rate', 'accuracy', 'time']
    assert [l.split() for l in lines[0::2]] == [header, header]  # fine_tune: the head's epoch, then the whole network's
    assert [l.split()[0] for l in lines[1::2]] == ['0', '0'] and len(lines) == 4
    assert all(0 <= float(v) for l in lines[1::2] for v in l.split()[1:5])
