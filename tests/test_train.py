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
