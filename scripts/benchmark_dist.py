#!/usr/bin/env python
"""Training samples/s of 1 process vs W local workers of a dist_sync job (launch_local.py), and
with --hosts vs 2 workers on 2 hosts that are network namespaces of this machine (launch_hosts.py,
MXNet's ssh launcher; needs root and `ip`), same config and global batch, on the toy set; read
from the runs' metrics.jsonl (rank 0's figures are the whole job's), the first epoch skipped
(start-up, graph building). Also the bytes each worker pushes per step: counted on host 2's
link (--hosts) and computed from the trainable parameter count (float32 gradients), with what
that means for 1, 10 and 25 GbE links at a GPU's step rate (--gpu-images-per-s).

Example: python scripts/benchmark_dist.py --workers 2 --epochs 3 --hosts [KEY VALUE ...]
(OMP_NUM_THREADS is split over the workers: each gets threads / W.)
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

from benchmarking import describe_machine
from reid_baseline.data.toy.market1501 import make_toy_market1501

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# One A100 training ResNet-50 in TF32: 1022 images/s at 224x224, batch 256 (NVIDIA
# DeepLearningExamples, MxNet/Classification/RN50v1.5, DGX A100 80GB, 1 GPU), scaled by pixel
# count to the recipe's 256x128: 1022 * 224 * 224 / (256 * 128) = 1565 images/s.
A100_IMAGES_PER_S = 1565.0
LINKS_GBE = (1, 10, 25)


def _samples_per_s(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f][1:]
    return sum(r["images_per_sec"] for r in records) / len(records)


def gradient_bytes(config, num_classes, opts=()):
    """(trainable parameters, bytes of their float32 gradients) of the config's network."""
    import mxnet as mx
    from mxnet import autograd

    from reid_baseline.config import load_config
    from reid_baseline.modeling.network import build_model
    cfg = load_config(config, list(opts) + ["MODEL.PRETRAINED", "", "GPUS", "[]"])
    net = build_model(cfg, num_classes, [mx.cpu()])
    with autograd.record():
        net(mx.nd.zeros((2, 3, cfg.INPUT.HEIGHT, cfg.INPUT.WIDTH)))  # completes deferred shapes
    count = sum(p.data().size for p in net.collect_params().values() if p.grad_req != "null")
    return count, 4 * count


def link_table(bytes_per_step, steps_per_s):
    """For each link: seconds to push one step's gradients and the share of the GPU's step
    rate the link allows (pulls take as long in the other direction of a full-duplex link)."""
    rows = {}
    for gbe in LINKS_GBE:
        seconds = bytes_per_step * 8 / (gbe * 1e9)
        rows["%d GbE" % gbe] = {"push_s_per_step": round(seconds, 4),
                                "max_steps_per_s": round(1 / seconds, 1),
                                "share_of_gpu_rate": round(min(1.0, 1 / seconds / steps_per_s), 3)}
    return rows


def _run_on_hosts(train, common, run_dir, threads):
    """2 workers on namespaced hosts 1 and 2 (1 server on host 1), the launcher and scheduler on
    host 0; returns the bytes host 2 (one worker alone) sent and received."""
    from reid_baseline.launch.netns_hosts import NetnsHosts, why_no_namespaces
    reason = why_no_namespaces()
    if reason:
        raise SystemExit("--hosts: %s" % reason)
    folder = tempfile.mkdtemp(prefix="bench_hosts_")
    hosts = NetnsHosts(3, folder)
    try:
        hostfile = os.path.join(folder, "hosts")
        with open(hostfile, "w") as f:
            f.write("%s\n%s\n" % (hosts.addresses[1], hosts.addresses[2]))
        command = "cd %s && %s" % (ROOT, " ".join('"%s"' % w for w in train + common + [
            "OUTPUT_DIR", run_dir, "SOLVER.KVSTORE", "dist_sync"]))
        counters = ["/sys/class/net/%s/statistics/%s" % (hosts.veths[2], name)
                    for name in ("rx_bytes", "tx_bytes")]  # the bridge side: rx = host 2 sent
        before = [int(open(c).read()) for c in counters]
        subprocess.run(hosts.run_on(0, [sys.executable, os.path.join(ROOT, "scripts", "launch_hosts.py"),
                                        "-H", hostfile, "-n", "2", "-s", "1", "--interface", "eth0",
                                        "--env", "OMP_NUM_THREADS=%d" % max(threads // 2, 1), command]),
                       check=True, cwd=ROOT, env=hosts.env, stdout=subprocess.DEVNULL)
        sent, received = [int(open(c).read()) - b for c, b in zip(counters, before, strict=True)]
        return sent, received
    finally:
        hosts.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", os.cpu_count())))
    parser.add_argument("--hosts", action="store_true",
                        help="also run 2 workers on 2 namespaced hosts (root, `ip`)")
    parser.add_argument("--gpu-images-per-s", type=float, default=A100_IMAGES_PER_S,
                        help="training images/s of one GPU for the link table (default: A100, TF32)")
    parser.add_argument("--gpu-batch", type=int, default=32, help="images per GPU step (default 32)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="bench_dist_")
    toy = make_toy_market1501(work, seed=0)
    common = ["--config", os.path.join(ROOT, "configs", "demo_toy.yml"), "DATASETS.ROOT", toy["root"],
              "SOLVER.MAX_EPOCHS", str(args.epochs), "SOLVER.EVAL_PERIOD", "0",
              "SOLVER.CHECKPOINT_PERIOD", str(args.epochs), "DATALOADER.NUM_WORKERS", "0",
              "GPUS", "[]"] + args.opts
    train = [sys.executable, os.path.join(ROOT, "train.py")]
    results = {"machine": describe_machine(), "epochs_timed": args.epochs - 1}
    for workers in (1, args.workers):
        run_dir = os.path.join(work, "w%d" % workers)
        env = dict(os.environ, OMP_NUM_THREADS=str(max(args.threads // workers, 1)))
        if workers == 1:
            cmd = train + common + ["OUTPUT_DIR", run_dir]
        else:
            cmd = ([sys.executable, os.path.join(ROOT, "scripts", "launch_local.py"), "--workers",
                    str(workers), "--"] + train + common
                   + ["OUTPUT_DIR", run_dir, "SOLVER.KVSTORE", "dist_sync"])
        subprocess.run(cmd, check=True, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
        results["samples_per_s_%d_worker%s" % (workers, "s" if workers > 1 else "")] = _samples_per_s(run_dir)
        results["load_1min_after_%d_worker%s" % (workers, "s" if workers > 1 else "")] = os.getloadavg()[0]
    results["ratio"] = results["samples_per_s_%d_workers" % args.workers] / results["samples_per_s_1_worker"]
    steps = args.epochs * (toy["train_images"] // 32)
    params, grad_bytes = gradient_bytes(os.path.join(ROOT, "configs", "demo_toy.yml"), toy["train_ids"],
                                        args.opts)
    results["demo_trainable_parameters"] = params
    results["demo_gradient_bytes_per_step"] = grad_bytes
    if args.hosts:
        run_dir = os.path.join(work, "hosts2")
        sent, received = _run_on_hosts(train, common, run_dir, args.threads)
        results["samples_per_s_2_hosts"] = _samples_per_s(run_dir)
        results["load_1min_after_2_hosts"] = os.getloadavg()[0]
        results["ratio_2_hosts"] = results["samples_per_s_2_hosts"] / results["samples_per_s_1_worker"]
        results["host2_worker_sent_bytes_per_step"] = sent / steps
        results["host2_worker_received_bytes_per_step"] = received / steps
    params, grad_bytes = gradient_bytes(os.path.join(ROOT, "configs", "market1501.yml"), 751)
    results["market1501_trainable_parameters"] = params
    results["market1501_gradient_bytes_per_step"] = grad_bytes
    steps_per_s = args.gpu_images_per_s / args.gpu_batch
    results["gpu_steps_per_s"] = round(steps_per_s, 1)
    results["links_market1501"] = link_table(grad_bytes, steps_per_s)
    for key, value in results.items():
        print("%-36s %s" % (key, "%.2f" % value if isinstance(value, float) else value))


if __name__ == "__main__":
    main()
