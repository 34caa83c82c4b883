"""The config schema: every valid key, its default, its type and the values it accepts.

A YAML config may only set keys that exist here; anything else is a typo and is refused with
the closest valid key. The type comes from the default; the allowed values (``CHOICES``,
``RANGES``, ``ITEMS`` ...) are declared below ``DEFAULTS``, so the whole contract of a key is
read in this one file. Keep the comments: they are the reference for what each key means.
"""

from __future__ import annotations

DEFAULTS: dict = {
    "seed": 0,
    "output_dir": "runs/default",  # run directory (tools/train.py --output overrides it)
    "device": "auto",  # auto | cpu | cuda | cuda:N
    "deterministic": False,  # deterministic algorithms (bit-exact resume on CPU)
    "model": {
        # c5: plain ResNet, stride 32 | dc5: layer4 dilated, stride 16 |
        # dc4: layer3+layer4 dilated, stride 8 | fpn: torchvision FPN over the same ResNet
        "variant": "dc5",
        "num_classes": 0,  # foreground classes; 0 = take it from the training dataset
        "backbone": {
            "depth": 18,  # 18 | 34 | 50 | 101
            # per-block dilation rates per stage, e.g. {layer4: [1, 2, 5]} (BasicBlock stages
            # also take one rate per 3x3 conv); a stage not named gets the variant's default:
            # 1, or the product of the strides traded so far (dc5: layer4 2; dc4: 2 and 4)
            "dilations": {},
            "hdc_check": "warn",  # error | warn | off
            "norm": "frozen_bn",  # frozen_bn | bn | gn | syncbn
            "gn_groups": 32,
            # local path to a torchvision ResNet state dict, or a torchvision weights enum
            # such as "ResNet50_Weights.IMAGENET1K_V1" (needs the internet); null = random init
            "weights": None,
            "trainable_layers": 5,  # 0-5 stages trained, counted from the top (layer4 first)
            "reduce_channels": 0,  # 1x1 conv on the last stage's output, 0 = off (e.g. 512)
            "fpn_channels": 256,
        },
        "anchors": {
            # c5/dc5/dc4: all sizes on the single map; fpn: one size per level (5 levels)
            "sizes": [16, 32, 64, 128, 256],
            "aspect_ratios": [0.5, 1.0, 2.0],
        },
        "rpn": {
            "pre_nms_top_n_train": 2000,
            "pre_nms_top_n_test": 1000,
            "post_nms_top_n_train": 2000,
            "post_nms_top_n_test": 1000,
            "nms_thresh": 0.7,
            "fg_iou_thresh": 0.7,
            "bg_iou_thresh": 0.3,
            "batch_size_per_image": 256,
            "positive_fraction": 0.5,
            "score_thresh": 0.0,
            # how anchors become positives: iou (torchvision's IoU matcher, fg/bg_iou_thresh) |
            # nwd (normalized Gaussian Wasserstein distance, Wang et al. 2021) | rfla
            # (receptive-field distance, Xu et al. 2022; the prior comes from the model's RF)
            "matcher": "iou",
            "nwd": {
                "constant": 12.8,  # C in exp(-W2 / C), px (AI-TOD's value)
                "fg_thresh": 0.7,
                "bg_thresh": 0.3,
            },
            "rfla": {
                "topk": [3, 1],  # positives per box: first pass, hierarchical second pass
                "ratio": 0.9,  # second pass: receptive fields shrunk by this factor
                "erf_fraction": 0.5,  # effective RF radius as a fraction of the theoretical RF
            },
        },
        "roi": {
            "output_size": 7,
            "sampling_ratio": 2,
            "representation_size": 1024,
            "batch_size_per_image": 512,
            "positive_fraction": 0.25,
            "fg_iou_thresh": 0.5,
            "bg_iou_thresh": 0.5,
            "score_thresh": 0.05,
            "nms_thresh": 0.5,
            "detections_per_img": 100,
            "matcher": "iou",  # iou | nwd: how proposals become foreground
            "nwd": {"constant": 12.8, "fg_thresh": 0.5, "bg_thresh": 0.5},
        },
        "transform": {
            # GeneralizedRCNNTransform sizes. 0 = keep each image at the size the data
            # pipeline produced (no shrinking of small objects behind the user's back).
            "min_size": 0,
            "max_size": 0,
            "image_mean": [0.485, 0.456, 0.406],
            "image_std": [0.229, 0.224, 0.225],
        },
        "trident": {
            # TridentNet (Li et al. 2019; docs/trident.md): every block of `stage` runs as
            # parallel branches that share all weights, branch k at the stage's rates x
            # branch_rates[k]. c5 / dc5 / dc4 only (not fpn).
            "enabled": False,
            "stage": "layer4",  # the dilated stage of dc5 (layer1 | layer2 | layer3 | layer4)
            "branch_rates": [1, 2, 3],  # multipliers of the stage's rates, increasing
            # scale-aware training: branch k learns only the boxes (RPN and RoI head) and the
            # proposals whose sqrt(w h) lies in its range, and at test keeps only detections in
            # it; off = every branch learns every box (as Detectron2 / MMDetection train it)
            "scale_aware": True,
            # per-branch [low, high] px, e.g. [[0, 90], [30, 160], [90, .inf]]; [] = derived
            # from each branch's receptive field (detector/models/trident.py, docs/trident.md)
            "ranges": [],
            # -1: all branches, detections merged by NMS | k: branch k alone (TridentNet-Fast;
            # also how the evaluation scores one branch). Test time only; not in the fingerprint
            "test_branch": -1,
        },
    },
    "data": {
        "source": "builtin",  # builtin | coco
        "train_images": "",  # coco: image root of the training set
        "train_ann": "",  # coco: COCO JSON of the training set
        "val_images": "",
        "val_ann": "",
        "builtin": {
            # the deterministic synthetic small-object dataset (detector/data/synthetic.py)
            "cache_dir": ".cache/smalldet",
            "num_train": 300,
            "num_val": 60,
            "image_size": 256,
            "seed": 0,
        },
        "num_workers": 2,
        "keep_empty_train": False,  # train on images without annotations too
        "strict": False,  # degenerate boxes are errors instead of counted warnings
        "bad_area": "warn",  # warn | recompute | error  (area field disagreeing with the box)
        "check_images": False,  # open every image at load time (the --check pass)
        "aspect_ratio_grouping": True,
        "transforms": {
            "hflip": 0.5,  # probability
            "crop_size": 0,  # random crop side in px, 0 = no crop
            "min_box_visibility": 0.5,  # a cropped box keeps at least this fraction, else dropped
            "train_scales": [],  # multi-scale: short side chosen per image; [] = native size
            "scale_jitter": [1.0, 1.0],  # random rescale factor range
            "test_scale": 0,  # short side at test time, 0 = native size
            "max_size": 2000,  # cap on the long side after resizing
        },
        "tiles": {
            # sliced training (detector/data/tiles.py): each training sample is a square tile
            # of its image, cut on the fly; validation images stay whole
            "enabled": False,
            "size": 512,  # tile side in px, as the model sees it
            # magnification: the tile covers size / scale source px (scale 2: objects doubled)
            "scale": 1.0,
            "positive_fraction": 0.5,  # share of tiles placed around an object picked at random
            "min_visibility": 0.5,  # a box cut by the tile keeps this fraction, else dropped
        },
    },
    "solver": {
        "optimizer": "sgd",  # sgd | adamw
        "lr": 0.02,
        "momentum": 0.9,
        "betas": [0.9, 0.999],
        "weight_decay": 1e-4,
        "no_decay_norm_bias": True,  # no weight decay on norm layers and biases
        # torch's fused optimizer step (one kernel for all parameters): AdamW's step takes 0.05
        # s instead of 0.22 s for a ResNet-18 detector on one CPU thread. Off by default so that
        # runs recorded before it reproduce bit for bit (fused rounds differently)
        "fused": False,
        "max_iter": 1000,  # training iterations (optimizer steps)
        "max_epochs": 0,  # > 0: stop after this many epochs instead of max_iter
        "ims_per_batch": 4,  # images per iteration, across all ranks
        "accumulate": 1,  # gradient accumulation steps per iteration
        "warmup_iters": 100,
        "warmup_factor": 0.001,
        "schedule": "multistep",  # multistep | cosine
        "steps": [0.67, 0.89],  # multistep milestones: fractions of max_iter (or ints)
        "gamma": 0.1,
        "min_lr_factor": 0.0,  # cosine floor, as a fraction of lr
        "clip_grad_norm": 0.0,  # 0 = off
        "amp": "none",  # none | fp16 | bf16 (CUDA only; ignored with a note on CPU)
        "channels_last": False,
        "tf32": True,
    },
    "checkpoint": {
        "period": 500,  # iterations between checkpoints, 0 = only at the end
        "keep_last": 3,
        "best_metric": "AP_small",  # eval key that picks model_best.pth; "" = off
    },
    "eval": {
        "period": 0,  # iterations between evaluations, 0 = none during training
        # a scoring preset (detector.utils.bins.EVAL_PRESETS: coco | aitod | tinyperson | soda |
        # dense) sets bins, max_dets and iou_thrs below and raises the model's test-time caps
        # (model.rpn.*_nms_top_n_test, model.roi.detections_per_img) to reach its largest
        # maxDets; keys the config sets itself win. "" = none (docs/evaluation.md)
        "preset": "",
        "bins": "coco",  # bins preset name or comma-separated edges
        "max_dets": [1, 10, 100],
        "iou_thrs": [],  # IoU thresholds, e.g. [0.25, 0.5, 0.75]; [] = COCO's 0.50:0.05:0.95
        "backend": "fast",  # fast | pycocotools
        "vis_images": 4,  # val images drawn into TensorBoard at each evaluation
        "final": True,  # evaluate once more at the end of training
    },
    "log": {
        "period": 20,  # iterations between scalar logs
        "tensorboard": True,
        "progress": True,  # tqdm progress bar
    },
}

# Keys whose value is a free-form mapping (their sub-keys are not checked against DEFAULTS).
FREE_FORM = {"model.backbone.dilations"}

# Keys whose default is None but which take a value of these types.
NULLABLE = {"model.backbone.weights": (str,)}

# ------------------------------------------------------------------------------ allowed values
# What each key accepts beyond its type. The loader checks all of it when the config is loaded,
# so a typo or an impossible number fails in seconds, naming the key and the file, instead of
# after the dataset is built or, worse, being trained on. Other layers may still re-check.

# Enumerated keys: the values each one accepts. "cuda:N" stands for any GPU index (cuda:1).
CHOICES: dict[str, tuple] = {
    "device": ("auto", "cpu", "cuda", "cuda:N"),
    "model.variant": ("c5", "dc5", "dc4", "fpn"),
    "model.backbone.depth": (18, 34, 50, 101),
    "model.backbone.hdc_check": ("error", "warn", "off"),
    "model.backbone.norm": ("frozen_bn", "bn", "gn", "syncbn"),
    "model.rpn.matcher": ("iou", "nwd", "rfla"),
    "model.roi.matcher": ("iou", "nwd"),
    "model.trident.stage": ("layer1", "layer2", "layer3", "layer4"),
    "data.source": ("builtin", "coco"),
    "data.bad_area": ("warn", "recompute", "error"),
    "solver.optimizer": ("sgd", "adamw"),
    "solver.schedule": ("multistep", "cosine"),
    "solver.amp": ("none", "fp16", "bf16"),
    "eval.backend": ("fast", "pycocotools"),
}
# eval.bins (a preset of detector.utils.bins.PRESETS or comma-separated edges) is checked by
# resolving it with get_bins, and eval.preset with get_eval_preset (applied by the loader), so
# the presets are defined in one place only.

# Numeric bounds, written as the error message shows them: "> 0", ">= 1", "[0, 1]", "(0, 1]".
# A list key's bound holds for each of its items. solver.max_iter and solver.steps depend on
# other keys and are checked in the loader.
RANGES: dict[str, str] = {
    "model.num_classes": ">= 0",
    "model.backbone.gn_groups": ">= 1",
    "model.backbone.trainable_layers": "[0, 5]",
    "model.backbone.reduce_channels": ">= 0",
    "model.backbone.fpn_channels": ">= 1",
    "model.anchors.sizes": "> 0",
    "model.anchors.aspect_ratios": "> 0",
    "model.rpn.pre_nms_top_n_train": ">= 1",
    "model.rpn.pre_nms_top_n_test": ">= 1",
    "model.rpn.post_nms_top_n_train": ">= 1",
    "model.rpn.post_nms_top_n_test": ">= 1",
    "model.rpn.nms_thresh": "[0, 1]",
    "model.rpn.fg_iou_thresh": "[0, 1]",
    "model.rpn.bg_iou_thresh": "[0, 1]",
    "model.rpn.batch_size_per_image": ">= 1",
    "model.rpn.positive_fraction": "[0, 1]",
    "model.rpn.score_thresh": "[0, 1]",
    "model.rpn.nwd.constant": "> 0",
    "model.rpn.nwd.fg_thresh": "[0, 1]",
    "model.rpn.nwd.bg_thresh": "[0, 1]",
    "model.rpn.rfla.topk": ">= 1",
    "model.rpn.rfla.ratio": "(0, 1]",
    "model.rpn.rfla.erf_fraction": "(0, 1]",
    "model.roi.output_size": ">= 1",
    "model.roi.sampling_ratio": ">= 0",  # 0 = adaptive (torchvision's RoIAlign)
    "model.roi.representation_size": ">= 1",
    "model.roi.batch_size_per_image": ">= 1",
    "model.roi.positive_fraction": "[0, 1]",
    "model.roi.fg_iou_thresh": "[0, 1]",
    "model.roi.bg_iou_thresh": "[0, 1]",
    "model.roi.score_thresh": "[0, 1]",
    "model.roi.nms_thresh": "[0, 1]",
    "model.roi.detections_per_img": ">= 1",
    "model.roi.nwd.constant": "> 0",
    "model.roi.nwd.fg_thresh": "[0, 1]",
    "model.roi.nwd.bg_thresh": "[0, 1]",
    "model.transform.min_size": ">= 0",
    "model.transform.max_size": ">= 0",
    "model.transform.image_std": "> 0",
    "model.trident.branch_rates": ">= 1",
    "model.trident.test_branch": ">= -1",  # and < the number of branches (loader)
    "data.builtin.num_train": ">= 1",
    "data.builtin.num_val": ">= 0",
    "data.builtin.image_size": ">= 1",
    "data.num_workers": ">= 0",
    "data.transforms.hflip": "[0, 1]",
    "data.transforms.crop_size": ">= 0",
    "data.transforms.min_box_visibility": "[0, 1]",
    "data.transforms.train_scales": ">= 1",
    "data.transforms.scale_jitter": "> 0",
    "data.transforms.test_scale": ">= 0",
    "data.transforms.max_size": ">= 0",
    "data.tiles.size": ">= 1",
    "data.tiles.scale": "> 0",
    "data.tiles.positive_fraction": "[0, 1]",
    "data.tiles.min_visibility": "[0, 1]",
    "solver.lr": "> 0",
    "solver.momentum": "[0, 1]",
    "solver.betas": "[0, 1)",
    "solver.weight_decay": ">= 0",
    "solver.max_epochs": ">= 0",
    "solver.ims_per_batch": ">= 1",
    "solver.accumulate": ">= 1",
    "solver.warmup_iters": ">= 0",
    "solver.warmup_factor": "(0, 1]",
    "solver.gamma": "> 0",
    "solver.min_lr_factor": "[0, 1]",
    "solver.clip_grad_norm": ">= 0",
    "checkpoint.period": ">= 0",
    "checkpoint.keep_last": ">= 0",
    "eval.period": ">= 0",
    "eval.max_dets": ">= 1",
    "eval.iou_thrs": "(0, 1]",
    "eval.vis_images": ">= 0",
    "log.period": ">= 1",
}

# List keys: the type of their items (int: integers only; float: any number) and how many
# items they take, as a bound on the length.
ITEMS: dict[str, tuple[type, str]] = {
    "model.anchors.sizes": (float, ">= 1"),
    "model.anchors.aspect_ratios": (float, ">= 1"),
    "model.rpn.rfla.topk": (int, ">= 1"),
    "model.trident.branch_rates": (int, ">= 1"),  # strictly increasing (loader)
    "model.transform.image_mean": (float, "== 3"),  # one per RGB channel
    "model.transform.image_std": (float, "== 3"),
    "data.transforms.train_scales": (int, ">= 0"),
    "data.transforms.scale_jitter": (float, "== 2"),  # [low, high]
    "solver.betas": (float, "== 2"),
    "solver.steps": (float, ">= 0"),
    "eval.max_dets": (int, ">= 1"),
    "eval.iou_thrs": (float, ">= 0"),
}

# List keys whose items must not decrease.
NON_DECREASING = {"data.transforms.scale_jitter"}

# key -> the key it may not exceed: a box cannot be background above the foreground threshold.
AT_MOST = {
    "model.rpn.bg_iou_thresh": "model.rpn.fg_iou_thresh",
    "model.rpn.nwd.bg_thresh": "model.rpn.nwd.fg_thresh",
    "model.roi.bg_iou_thresh": "model.roi.fg_iou_thresh",
    "model.roi.nwd.bg_thresh": "model.roi.nwd.fg_thresh",
}

# The stages model.backbone.dilations may name (its rates: non-empty lists of positive ints).
DILATION_STAGES = ("layer1", "layer2", "layer3", "layer4")
