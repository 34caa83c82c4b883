"""File names inside a study's run directory (one place, shared by runner, worker and report)."""

FINAL_MODEL = "model_final.pth"  # written by the trainer when training is complete
RESULTS_FILE = "results_val.json"  # COCO detections on the validation set
EVAL_FILE = "study_eval.json"  # evaluation + model facts + timings; written last (= evaluated)
STATUS_FILE = "study_status.json"  # ok / failed, message, attempts, log tail
SETTINGS_FILE = "study_run.json"  # config, overrides and resolved config the run was made with
LOG_FILE = "study.log"  # stdout+stderr of every phase of every attempt
LOCK_FILE = ".study.lock"  # pid@host of the study process working on the run
