"""How close imgclf's training comes to the GPU's own speed: images/s of `train_classifier` against a plain PyTorch loop.

imgclf: `train_classifier` (presize cache, loader processes, batch augmentation on the GPU, bf16 or fp16 mixed
precision, channels_last), timed over the training phase of its whole-network epochs after the first.
The plain loop: the same model (after imgclf's training, every layer trainable), the same batch size and image size,
forward + backward + AdamW step over batches already on the GPU, with the same mixed precision and memory layout.
Nothing loads or augments there: it is the speed the GPU allows. Both run in this one process, one after the other.

    python bench/bench_gpu.py [DATA] [--size 224] [--bs 64] [--epochs 3]

DATA: a folder of class folders (default: the built-in flower photos, 406 photos; use a few thousand photos,
e.g. the TensorFlow flowers, for a steadier figure). Without a CUDA GPU it says so and exits (status 0).
"""
import argparse, sys, tempfile, time
from pathlib import Path
import torch


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('data', nargs='?', help='folder of class folders (default: the built-in flower photos)')
    p.add_argument('--size', type=int, default=224)
    p.add_argument('--bs', type=int, default=64)
    p.add_argument('--epochs', type=int, default=3, help='whole-network epochs; the first is not timed (default %(default)s)')
    p.add_argument('--steps', type=int, default=100, help='steps of the plain loop (default %(default)s)')
    a = p.parse_args()
    if not torch.cuda.is_available():
        print('No CUDA GPU on this machine: nothing to measure. Run this on a machine with an NVIDIA GPU.')
        return 0
    import imgclf.core  # before fastai
    from fastai.vision.all import Callback
    from imgclf.train import train_classifier
    if a.data is None:
        from imgclf.photos import flower_photos
        a.data = str(flower_photos(Path(tempfile.mkdtemp())/'flowers'))

    class Speed(Callback):
        "Images and seconds of the training phase of each epoch (the GPU synchronised at both ends)"
        order = 100
        def __init__(self): self.epochs = []
        def before_train(self): torch.cuda.synchronize(); self.t, self.n = time.perf_counter(), 0
        def after_batch(self):
            if self.training: self.n += len(self.yb[0])
        def after_train(self): torch.cuda.synchronize(); self.epochs.append((self.n, time.perf_counter() - self.t))

    speed = Speed()
    t0 = time.perf_counter()
    learn = train_classifier(a.data, recipe='fine_tune', size=a.size, bs=a.bs, epochs=a.epochs, lr=1e-3, quiet=True, cbs=[speed],
                             out=Path(tempfile.mkdtemp()))
    total = time.perf_counter() - t0
    timed = speed.epochs[2:] or speed.epochs[-1:]  # not the head's epoch, nor the first whole-network one (cuDNN autotuning)
    ours = sum(n for n, _ in timed) / sum(s for _, s in timed)
    amp = 'bf16' if torch.cuda.is_bf16_supported() else 'fp16'

    model = learn.model.cuda().to(memory_format=torch.channels_last).train()
    for q in model.parameters(): q.requires_grad_(True)
    x = torch.randn(a.bs, 3, a.size, a.size, device='cuda').to(memory_format=torch.channels_last)
    y = torch.randint(0, learn.dls.c, (a.bs,), device='cuda')
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_f = torch.nn.CrossEntropyLoss()
    dtype = torch.bfloat16 if amp == 'bf16' else torch.float16
    scaler = torch.amp.GradScaler(enabled=amp == 'fp16')
    def step():
        with torch.autocast('cuda', dtype=dtype): loss = loss_f(model(x), y)
        opt.zero_grad(set_to_none=True); scaler.scale(loss).backward(); scaler.step(opt); scaler.update()
    for _ in range(10): step()  # warm up
    torch.cuda.synchronize(); t = time.perf_counter()
    for _ in range(a.steps): step()
    torch.cuda.synchronize()
    plain = a.steps * a.bs / (time.perf_counter() - t)

    print(f'{torch.cuda.get_device_name()}, {a.size} px, batch {a.bs}, {amp} autocast, channels_last; data {a.data} '
          f'({len(learn.dls.train_ds)} training images), imgclf run {total:.0f} s in all')
    print(f'imgclf train_classifier: {ours:8.0f} images/s   (per epoch, the head's first: ' +
          ', '.join(f'{n/s:.0f}' for n, s in speed.epochs) + ')')
    print(f'plain PyTorch loop:      {plain:8.0f} images/s   (GPU tensors, no loading or augmentation)')
    print(f'ratio imgclf/plain: {ours/plain:.2f}   (target >= 0.8)')
    return 0


if __name__ == '__main__': sys.exit(main())
