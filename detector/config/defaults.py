"""The config schema: every valid key, its default and (through the default) its type.

A YAML config may only set keys that exist here; anything else is a typo and is refused with
the closest valid key. Keep the comments: they are the reference for what each key means.
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
        },
        "transform": {
            # GeneralizedRCNNTransform sizes. 0 = keep each image at the size the data
            # pipeline produced (no shrinking of small objects behind the user's back).
            "min_size": 0,
            "max_size": 0,
            "image_mean": [0.485, 0.456, 0.406],
            "image_std": [0.229, 0.224, 0.225],
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
    },
    "solver": {
        "optimizer": "sgd",  # sgd | adamw
        "lr": 0.02,
        "momentum": 0.9,
        "betas": [0.9, 0.999],
        "weight_decay": 1e-4,
        "no_decay_norm_bias": True,  # no weight decay on norm layers and biases
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
        "bins": "coco",  # preset name or comma-separated edges
        "max_dets": [1, 10, 100],
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
