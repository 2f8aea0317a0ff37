"""Cross-check the harness's reference number against an independent attack library.

    pip install -e '.[crosscheck]'          # foolbox 3.3.4 (TensorFlow backend through eagerpy)
    python benchmarks/bench_crosscheck.py [--models mnist/madry_cnn_pgd ...] [--n 500] [--eps 0.1,0.3] [--record]

For each shipped model (``saved_models/``, loaded with ``zoo.load_pretrained``; default: every
image model) and the first ``n`` test points of the data set it was trained on:

* the harness (``evaluation.harness.evaluate``, suites ``clean`` and ``whitebox``): clean accuracy,
  FGSM, PGD-20 and its reference number ``autoattack`` (APGD-CE + APGD-T with 9 targets, 100
  iterations each; Croce and Hein 2020), plus the unbounded check at eps 1.0 and the masking flags;
* foolbox 3.3.4 (Rauber, Brendel and Bethge 2017; Rauber et al. 2020, JOSS): clean accuracy and
  ``LinfPGD`` (Madry et al. 2018; 40 steps of ``0.01 / 0.3 * eps``, random start; foolbox's
  defaults) on the same points, at the same L-inf eps, pixels in [0, 1];
* with ``--art``, the Adversarial Robustness Toolbox 1.20.1 (Nicolae et al. 2018): its own APGD
  (Croce and Hein 2020) with the cross-entropy loss, then with the DLR loss on the points still
  correct, 100 iterations each, first step 2 eps as in the paper: an AutoAttack-strength number
  from another library, which the
  harness's ``autoattack`` should match within a point.

Accuracies are in %; a model passes when the clean accuracies are identical and, at every eps,
the harness's autoattack accuracy is at most foolbox PGD's (and ART's APGD's) plus 0.5 point.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time

import common  # noqa: F401  (puts the repository on sys.path)
import numpy as np
import tensorflow as tf

TOLERANCE = 0.005  # the harness's reference number may exceed the independent one by at most 0.5 point


def foolbox_numbers(model, x, y, eps_list, steps: int, batch: int) -> dict:
    """Clean and LinfPGD accuracy (fractions) of ``model`` from foolbox, in batches of ``batch``."""
    import foolbox as fb

    def logits(images):  # + 0 * sum(images): a step net's gradient is 0 (foolbox fails on TensorFlow's None)
        return model(images, training=False) + 0.0 * tf.reduce_sum(images, axis=[1, 2, 3])[:, None]

    fmodel = fb.TensorFlowModel(logits, bounds=(0.0, 1.0))
    attack = fb.attacks.LinfPGD(steps=steps)  # rel_stepsize 0.01 / 0.3, random start: foolbox's defaults
    clean, robust = 0, np.zeros(len(eps_list))
    for i in range(0, len(x), batch):
        xb = tf.constant(x[i:i + batch])
        yb = tf.constant(y[i:i + batch].astype(np.int64))
        clean += round(fb.utils.accuracy(fmodel, xb, yb) * len(xb))  # a count: foolbox returns a float32 mean
        _, clipped, success = attack(fmodel, xb, yb, epsilons=list(eps_list))
        for j, adv in enumerate(clipped):
            assert float(tf.reduce_max(tf.abs(adv - xb))) <= eps_list[j] + 1e-5  # inside the ball
            robust[j] += float(tf.reduce_sum(tf.cast(tf.argmax(model(adv, training=False), -1) == yb, tf.float32)))
    return {"clean": clean / len(x), "pgd": {eps: robust[j] / len(x) for j, eps in enumerate(eps_list)}}


def art_numbers(model, x, y, eps_list, steps: int, batch: int) -> dict:
    """Accuracy (fractions) per eps after ART's APGD-CE and then APGD-DLR on the points still correct."""
    from art.attacks.evasion import AutoProjectedGradientDescent
    from art.estimators.classification import TensorFlowV2Classifier

    clf = TensorFlowV2Classifier(model=lambda t, training=False: model(t, training=False), nb_classes=int(y.max()) + 1,
                                 input_shape=tuple(x.shape[1:]), clip_values=(0.0, 1.0),
                                 loss_object=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    robust = {}
    for eps in eps_list:
        correct = clf.predict(x, batch_size=batch).argmax(1) == y
        for loss in ("cross_entropy", "difference_logits_ratio"):
            idx = np.flatnonzero(correct)
            if not len(idx):
                break
            attack = AutoProjectedGradientDescent(clf, norm=np.inf, eps=eps, eps_step=2 * eps, max_iter=steps,
                                                  nb_random_init=1, batch_size=batch, loss_type=loss, verbose=False)
            adv = attack.generate(x[idx], y=y[idx])
            assert np.abs(adv - x[idx]).max() <= eps + 1e-5  # inside the ball
            correct[idx] &= clf.predict(adv, batch_size=batch).argmax(1) == y[idx]
        robust[eps] = float(np.mean(correct))
    return robust


def harness_numbers(model_dir, x, y, eps_list, apgd_steps: int) -> dict:
    from evaluation.harness import evaluate

    with tempfile.TemporaryDirectory() as out:
        result = evaluate([str(model_dir)], x, y, suites=("clean", "whitebox"), out=out, eps_list=eps_list,
                          whitebox_attacks=("fgsm", "pgd", "autoattack"), minimal_attacks=(), apgd_steps=apgd_steps,
                          log=lambda line: None)
    rows = result["rows"]
    wb = {(r["attack"], r["eps"]): r for r in rows if r["suite"] == "whitebox"}
    return {"clean": next(r["accuracy"] for r in rows if r["suite"] == "clean"),
            "fgsm": {e: wb[("fgsm", e)]["accuracy"] for e in eps_list},
            "pgd20": {e: wb[("pgd", e)]["accuracy"] for e in eps_list},
            "autoattack": {e: wb[("autoattack", e)]["accuracy"] for e in eps_list},
            "after": {e: wb[("autoattack", e)].get("accuracy_after") for e in eps_list},
            "unbounded_success": wb[("autoattack", 1.0)]["success_rate"] if ("autoattack", 1.0) in wb else None,
            "flags": next(iter(result["flags"].values()), [])}


def record(name: str, h: dict, fb: dict, n: int, eps_list, art: dict | None = None) -> None:
    """Write the harness's white-box numbers at the largest eps into the model's metadata
    (``evaluation.whitebox``, read by the leaderboard), add ``whitebox`` to its suites and merge this
    run's masking flags into ``evaluation.masking_flags``."""
    from zoo.export import read_metadata, update_metadata
    from zoo.pretrained import resolve

    path = resolve(name)
    ev = dict(read_metadata(path).get("evaluation") or {})
    eps = max(eps_list)
    ev["whitebox"] = {"norm": "Linf", "eps": eps, "n": n,
                      "accuracy": {"fgsm": h["fgsm"][eps], "pgd": h["pgd20"][eps], "autoattack": h["autoattack"][eps]},
                      "independent": {"foolbox_pgd40": fb["pgd"][eps],
                                      **({"art_apgd_ce_dlr": art[eps]} if art else {})},
                      "command": f"python benchmarks/bench_crosscheck.py --models {name} --n {n} "
                                 f"--eps {','.join(f'{e:g}' for e in eps_list)}{' --art' if art else ''} --record"}
    ev["suites"] = sorted(set(ev.get("suites") or []) | {"whitebox"})
    ev["masking_flags"] = sorted(set(ev.get("masking_flags") or []) | set(h["flags"]))
    update_metadata(path, evaluation=ev)


def image_models() -> list[str]:
    from zoo.pretrained import describe, list_pretrained

    return [name for name in list_pretrained() if len(describe(name)["architecture"].get("input_shape", [])) == 3]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="*", default=None, help="shipped model names (default: every image model)")
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--eps", default="0.1,0.3")
    p.add_argument("--steps", type=int, default=40, help="foolbox LinfPGD steps")
    p.add_argument("--apgd-steps", type=int, default=100)
    p.add_argument("--batch", type=int, default=250)
    p.add_argument("--art", action="store_true", help="also ART's APGD-CE + APGD-DLR (pip install "
                   "adversarial-robustness-toolbox==1.20.1)")
    p.add_argument("--record", action="store_true",
                   help="write the harness's white-box numbers at the largest eps into each model's metadata "
                        "(then run 'glrzoo pretrained readme')")
    p.add_argument("--record-from", default=None, metavar="LOG",
                   help="record from the JSON lines of an earlier run's output instead of attacking")
    args = p.parse_args()
    import foolbox

    from zoo.data import load_dataset
    from zoo.pretrained import describe, load_pretrained, resolve

    eps_list = [float(e) for e in args.eps.split(",")]
    if args.record_from:
        with open(args.record_from) as f:
            for line in f:
                if line.startswith("{"):
                    r = json.loads(line)
                    h, fb = r["harness"], r["foolbox"]
                    for key in ("fgsm", "pgd20", "autoattack"):
                        h[key] = {float(k): v for k, v in h[key].items()}
                    fb["pgd"] = {float(k): v for k, v in fb["pgd"].items()}
                    art = {float(k): v for k, v in r["art"].items()} if r.get("art") else None
                    record(r["model"], h, fb, r["n"], [float(e) for e in h["autoattack"]], art)
                    print(f"recorded {r['model']}")
        return
    print(f"foolbox {foolbox.__version__}, tensorflow {tf.__version__}; first {args.n} test points; accuracy in %")
    print(f"{'model':<26} {'eps':>4} {'clean h/fb':>13} {'FGSM':>6} {'PGD-20':>7} {'autoattack':>10} "
          f"{'fb PGD-' + str(args.steps):>9} {'aa - fb':>8}  verdict")
    failures = 0
    for name in args.models or image_models():
        meta = describe(name)
        data = load_dataset(meta["dataset"]["name"], common.data_dir())
        x, y = data.x_test[:args.n], data.y_test[:args.n]
        t0 = time.perf_counter()
        fb = foolbox_numbers(load_pretrained(name), x, y, eps_list, args.steps, args.batch)
        t_fb = time.perf_counter() - t0
        h = harness_numbers(resolve(name), x, y, eps_list, args.apgd_steps)
        t_h = time.perf_counter() - t0 - t_fb
        art = art_numbers(load_pretrained(name), x, y.astype(np.int64), eps_list, args.apgd_steps, args.batch) \
            if args.art else None
        same_clean = round(h["clean"] * args.n) == round(fb["clean"] * args.n)  # the same number of points
        for eps in eps_list:
            gap = h["autoattack"][eps] - fb["pgd"][eps]
            ok = same_clean and gap <= TOLERANCE + 1e-9
            if art:
                ok = ok and h["autoattack"][eps] - art[eps] <= TOLERANCE + 1e-9
            failures += not ok
            print(f"{name:<26} {eps:>4} {100 * h['clean']:>6.1f}/{100 * fb['clean']:<6.1f} {100 * h['fgsm'][eps]:>6.1f} "
                  f"{100 * h['pgd20'][eps]:>7.1f} {100 * h['autoattack'][eps]:>10.1f} {100 * fb['pgd'][eps]:>9.1f} "
                  f"{100 * gap:>+8.1f}  {'ok' if ok else 'FAIL'}"
                  + (f"  ART APGD-CE+DLR {100 * art[eps]:.2f} (aa - art {100 * (h['autoattack'][eps] - art[eps]):+.2f})"
                     if art else ""), flush=True)
        if args.record:
            record(name, h, fb, args.n, eps_list, art)
        print(json.dumps({"model": name, "n": args.n, "harness": h, "foolbox": fb, "art": art, "seconds": {
            "foolbox": round(t_fb), "harness": round(t_h)}}, default=str), flush=True)
    print("all within tolerance" if not failures else f"{failures} comparison(s) outside tolerance")


if __name__ == "__main__":
    main()
