"""The reference CIFAR-10 ConvMixer pipeline, restated in this repository: the baseline that `cmx bench
--vs-reference` and benchmarks/end_to_end.py measure cmx against, so both work in any clone.

It follows the public convmixer-cifar10 recipe (locuslab/convmixer-cifar10, MIT licence): the paper's Fig. 3
model, per-image torchvision PIL transforms (RandomResizedCrop, flip, RandAugment, ColorJitter,
RandomErasing) in a DataLoader, AdamW, the piecewise-linear lr schedule, cross-entropy. It reads the
cifar-10-batches-py layout directly (no md5 check), so it also runs on subsets. Prints one line per epoch
and a final JSON line. (Kept line for line with the restatement the project was first benchmarked with,
so figures in benchmarks/RESULTS.md stay comparable.)

usage: python benchmarks/reference_pipeline.py --data DIR [--hdim 64 --depth 4 --psize 2 --conv-ks 5 --epochs 5 ...]
       python benchmarks/reference_pipeline.py --data DIR --mode aug  [--batches 40]   # augmentation img/s (JSON)
       python benchmarks/reference_pipeline.py --mode step [--hdim 256 --depth 8 --psize 1 --conv-ks 9 --batch-size 64]
                                                                          # train-step img/s (JSON)
"""
import argparse, json, pickle, time
from pathlib import Path
import numpy as np
import torch, torch.nn as nn, torch.optim as optim
import torchvision.transforms as T
from PIL import Image

p = argparse.ArgumentParser()
p.add_argument("--data")
p.add_argument("--mode", default="train", choices=["train", "aug", "step"])
p.add_argument("--batches", default=40, type=int, help="batches to time in aug/step modes")
p.add_argument("--batch-size", default=128, type=int)
p.add_argument("--scale", default=0.75, type=float)
p.add_argument("--reprob", default=0.25, type=float)
p.add_argument("--ra-m", default=8, type=int)
p.add_argument("--ra-n", default=1, type=int)
p.add_argument("--jitter", default=0.1, type=float)
p.add_argument("--hdim", default=64, type=int)
p.add_argument("--depth", default=4, type=int)
p.add_argument("--psize", default=2, type=int)
p.add_argument("--conv-ks", default=5, type=int)
p.add_argument("--wd", default=0.01, type=float)
p.add_argument("--clip-norm", action="store_true")
p.add_argument("--epochs", default=5, type=int)
p.add_argument("--lr-max", default=0.01, type=float)
p.add_argument("--workers", default=1, type=int)
p.add_argument("--threads", default=0, type=int)
p.add_argument("--seed", default=0, type=int)
a = p.parse_args()
torch.manual_seed(a.seed); np.random.seed(a.seed)
if a.threads: torch.set_num_threads(a.threads)

class Residual(nn.Module):
    def __init__(self, fn): super().__init__(); self.fn = fn
    def forward(self, x): return self.fn(x) + x

def ConvMixer(dim, depth, kernel_size, patch_size, n_classes=10):
    return nn.Sequential(
        nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size), nn.GELU(), nn.BatchNorm2d(dim),
        *[nn.Sequential(Residual(nn.Sequential(nn.Conv2d(dim, dim, kernel_size, groups=dim, padding="same"),
                                               nn.GELU(), nn.BatchNorm2d(dim))),
                        nn.Conv2d(dim, dim, kernel_size=1), nn.GELU(), nn.BatchNorm2d(dim)) for _ in range(depth)],
        nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(), nn.Linear(dim, n_classes))

if a.mode == "step":
    model = ConvMixer(a.hdim, a.depth, a.conv_ks, a.psize)
    opt = optim.AdamW(model.parameters(), lr=a.lr_max, weight_decay=a.wd)
    X, y = torch.randn(a.batch_size, 3, 32, 32), torch.randint(0, 10, (a.batch_size,))
    def step():
        opt.zero_grad(); loss = nn.functional.cross_entropy(model(X), y); loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0); opt.step(); return loss.item()
    for _ in range(3): step()
    t = time.perf_counter()
    for _ in range(a.batches): step()
    dt = time.perf_counter() - t
    print(json.dumps({"mode": "step", "img_per_s": round(a.batches * a.batch_size / dt, 1),
                      "config": f"{a.hdim}/{a.depth} p{a.psize} k{a.conv_ks} bs{a.batch_size}"}))
    raise SystemExit(0)

class Batches(torch.utils.data.Dataset):
    def __init__(self, root, train, transform):
        d = Path(root) / "cifar-10-batches-py"
        files = sorted(d.glob("data_batch_*")) if train else [d / "test_batch"]
        xs, ys = [], []
        for f in files:
            with open(f, "rb") as fh: e = pickle.load(fh, encoding="latin1")
            xs.append(e["data"]); ys += e.get("labels") or e["fine_labels"]
        self.x = np.concatenate(xs).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        self.y, self.t = ys, transform
    def __len__(self): return len(self.y)
    def __getitem__(self, i): return self.t(Image.fromarray(self.x[i])), self.y[i]

mean, std = (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)
train_t = T.Compose([T.RandomResizedCrop(32, scale=(a.scale, 1.0), ratio=(1.0, 1.0)), T.RandomHorizontalFlip(p=0.5),
                     T.RandAugment(num_ops=a.ra_n, magnitude=a.ra_m), T.ColorJitter(a.jitter, a.jitter, a.jitter),
                     T.ToTensor(), T.Normalize(mean, std), T.RandomErasing(p=a.reprob)])
test_t = T.Compose([T.ToTensor(), T.Normalize(mean, std)])
trainset, testset = Batches(a.data, True, train_t), Batches(a.data, False, test_t)
dl = dict(batch_size=a.batch_size, num_workers=a.workers, persistent_workers=a.workers > 0)
trainloader = torch.utils.data.DataLoader(trainset, shuffle=True, **dl)
testloader = torch.utils.data.DataLoader(testset, shuffle=False, **dl)
if a.mode == "aug":
    it = iter(trainloader); next(it)  # start the workers
    t = time.perf_counter(); n = 0
    for _ in range(a.batches):
        try: X, y = next(it)
        except StopIteration: it = iter(trainloader); X, y = next(it)
        n += len(y)
    dt = time.perf_counter() - t
    print(json.dumps({"mode": "aug", "img_per_s": round(n / dt, 1), "workers": a.workers}))
    raise SystemExit(0)
model = ConvMixer(a.hdim, a.depth, a.conv_ks, a.psize)
sched = lambda t: np.interp([t], [0, a.epochs * 2 // 5, a.epochs * 4 // 5, a.epochs], [0, a.lr_max, a.lr_max / 20.0, 0])[0]
opt = optim.AdamW(model.parameters(), lr=a.lr_max, weight_decay=a.wd)
crit = nn.CrossEntropyLoss()
t0 = time.time(); acc = 0.0
for epoch in range(a.epochs):
    start = time.time(); tl = ta = n = 0
    model.train()
    for i, (X, y) in enumerate(trainloader):
        lr = sched(epoch + (i + 1) / len(trainloader)); opt.param_groups[0].update(lr=lr)
        opt.zero_grad(); out = model(X); loss = crit(out, y); loss.backward()
        if a.clip_norm: nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        tl += loss.item() * y.size(0); ta += (out.argmax(1) == y).sum().item(); n += y.size(0)
    model.eval(); c = m = 0
    with torch.no_grad():
        for X, y in testloader:
            c += (model(X).argmax(1) == y).sum().item(); m += y.size(0)
    acc = c / m
    print(f"epoch {epoch} train_acc {ta/n:.4f} test_acc {acc:.4f} time {time.time()-start:.1f}s lr {lr:.5f}", flush=True)
print(json.dumps({"test_acc": acc, "wall_s": round(time.time() - t0, 1), "train_images": len(trainset)}))
