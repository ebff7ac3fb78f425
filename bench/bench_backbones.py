"""The backbones imgclf offers: parameters, and CPU images/s for training and for inference.

    python bench/bench_backbones.py [--data DATA] [--size 160] [--bs 32] [--steps 6]

Each backbone gets imgclf's head for DATA's classes (as `make_learner` builds it). Training speed is a full
forward + backward + optimizer step of the unfrozen network; inference is a forward pass in eval mode with
no gradients. The batch is `--bs` photos of DATA (a folder with one sub-folder of photos per class; default
a copy of the built-in flower photos), resized to `--size`. Random weights are used (the speed depends on
neither the weights nor the pixels), so nothing is downloaded. Accuracy is `bench/bench_train.py`'s business;
the ResNets' ImageNet weights need a download.
"""
import argparse, tempfile, time, torch, os
from pathlib import Path
import imgclf.core  # noqa: F401  (before fastai: imgclf's settings for torch and fastai)
from fastai.vision.all import create_vision_model
from imgclf.train import FASTAI_ARCHS

def per_second(fn, n_images, steps):
    fn()  # warm-up
    t = time.perf_counter()
    for _ in range(steps): fn()
    return n_images*steps/(time.perf_counter() - t)

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--data', help='folder of class folders (default: the built-in flower photos)')
    p.add_argument('--size', type=int, default=160); p.add_argument('--bs', type=int, default=32)
    p.add_argument('--steps', type=int, default=6)
    a = p.parse_args()
    torch.manual_seed(0)
    from imgclf.photos import flower_photos
    from imgclf.data import image_dls
    data = a.data or flower_photos(Path(tempfile.mkdtemp())/'flowers')
    dls = image_dls(data, size=a.size, bs=a.bs)
    x, y = (t.as_subclass(torch.Tensor).cpu() for t in dls.one_batch())
    print(f'{a.size} px, batch {a.bs}, {os.cpu_count()} CPU cores, torch {torch.__version__} ({torch.get_num_threads()} threads)')
    print(f'{"backbone":<20}{"params (M)":>11}{"train img/s":>13}{"infer img/s":>13}')
    rows = {}
    for name, b in FASTAI_ARCHS.items():
        m = create_vision_model(b['arch'], dls.c, pretrained=False)
        opt = torch.optim.AdamW(m.parameters(), 1e-3)
        def train_step():
            m.train(); opt.zero_grad(); torch.nn.functional.cross_entropy(m(x), y).backward(); opt.step()
        def infer():
            m.eval()
            with torch.inference_mode(): m(x)
        rows[name] = (sum(p.numel() for p in m.parameters())/1e6, per_second(train_step, a.bs, a.steps), per_second(infer, a.bs, a.steps))
        print(f'{name:<20}{rows[name][0]:>11.1f}{rows[name][1]:>13.1f}{rows[name][2]:>13.1f}', flush=True)
    base = rows['resnet18']
    for name, r in rows.items():
        print(f'{name}: training {r[1]/base[1]:.2f}x, inference {r[2]/base[2]:.2f}x the speed of resnet18')
