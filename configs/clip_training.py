"""CLIP training on real image-text data: the settings every data config shares.

Not a config to run by itself: configs/webdataset.py, tfrecord.py and tfds.py build on it and
say where the data is. Their argument chooses the scale:

  --config=configs/webdataset.py         ViT-B/32 as in the paper: 224 px, batch 32,768,
                                         12.8 B samples seen (32 epochs of 400 M pairs)
  --config=configs/webdataset.py:tiny    a small ViT at 64 px, batch 64, 100 steps: to try a
                                         data source or the pipeline on a laptop CPU
"""

import ml_collections

# ViT-B/32 hyperparameters from the paper's Table 20 (learning rate, weight decay, warm-up,
# Adam's beta2 and epsilon); the batch and the schedule of its 32-epoch run.
FULL = dict(model="ViT-B-32", image_size=224, global_batch_size=32_768, total_steps=390_625,
            learning_rate=5e-4, warmup_steps=2_000, log_every_steps=100,
            checkpoint_every_steps=2_000)
TINY = dict(model="tiny-vit", image_size=64, global_batch_size=64, total_steps=100,
            learning_rate=1e-3, warmup_steps=10, log_every_steps=10, checkpoint_every_steps=50)
SCALES = {"full": FULL, "tiny": TINY}
CONTEXT_LENGTH = 77


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  scale_name = arg or "full"
  if scale_name not in SCALES:
    raise ValueError(f"config argument {scale_name!r}; allowed: {', '.join(SCALES)}.")
  scale = SCALES[scale_name]
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.total_steps = scale["total_steps"]
  config.global_batch_size = scale["global_batch_size"]
  config.log_every_steps = scale["log_every_steps"]
  config.nonfinite = "stop"

  config.model = ml_collections.ConfigDict()
  config.model.name = scale["model"]
  config.model.overrides = ml_collections.ConfigDict()
  if scale_name == "tiny":
    config.model.overrides = ml_collections.ConfigDict(dict(
        embed_dim=128,
        vision=dict(image_size=scale["image_size"], patch_size=8, width=128, layers=3),
        text=dict(context_length=CONTEXT_LENGTH, vocab_size=49_408, width=128, layers=2),
    ))

  # The data configs add the source (`name` and where its files are).
  config.data = ml_collections.ConfigDict(dict(
      image_size=scale["image_size"], context_length=CONTEXT_LENGTH, tokenizer="clip_bpe",
      tokenizer_model="",  # a SentencePiece .model file, for tokenizer="sentencepiece"
      seed=0,
      crop_scale=(0.9, 1.0),  # random resized crop: the fraction of the image area kept
      exact_resize=False,  # True: PIL's antialiased bicubic (open_clip's pixels), ~2x slower
      cycle_length=8,  # shards read at once by each process
      shuffle_window=2_048,  # records shuffled together
  ))

  # blockwise=True: the same loss tile by tile, for batches whose [b, N] logits do not fit
  # (clip_jax/blockwise_losses.py).
  config.loss = ml_collections.ConfigDict(dict(name="softmax", blockwise=False, tile_size=1024))
  config.optim = ml_collections.ConfigDict(dict(
      learning_rate=scale["learning_rate"], b1=0.9, b2=0.98, eps=1e-6, weight_decay=0.2,
      warmup_steps=scale["warmup_steps"], grad_clip_norm=1.0, end_learning_rate=0.0))
  # FLIP (clip_jax/flip.py, a ViT only): mask_ratio drops that fraction of each image's patches
  # in training, making the image tower's step that much cheaper (the paper trains at 0.5, half
  # the wall-clock, or 0.75); the last unmasked_steps train on whole images again (the paper's
  # unmasked tuning, a fraction of an epoch). Evaluation always sees whole images. 0.0 is CLIP.
  config.flip = ml_collections.ConfigDict(dict(mask_ratio=0.0, unmasked_steps=0))
  config.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1))
  # Fine-tuning (clip_jax/finetune.py): start from a directory written by `python -m
  # clip_jax.convert` ("" trains from scratch; the model config must have its sizes). LiT locks the
  # image tower: --config.finetune.lock_image=True, with its last N blocks still training through
  # image_unlocked_blocks=N; the same for the text tower.
  config.finetune = ml_collections.ConfigDict(dict(
      checkpoint="", lock_image=False, image_unlocked_blocks=0, lock_text=False,
      text_unlocked_blocks=0))
  config.checkpoint = ml_collections.ConfigDict(dict(
      every_steps=scale["checkpoint_every_steps"], max_to_keep=2))
  # Several hosts (clip_jax/distributed.py): mode "auto" on a TPU pod slice or under SLURM / Open
  # MPI; "explicit" with coordinator_address ("host:port" of process 0), num_processes and
  # process_id. local_device_ids: this process's GPUs, () for JAX's choice.
  config.distributed = ml_collections.ConfigDict(dict(
      mode="off", coordinator_address="", num_processes=0, process_id=-1, local_device_ids=()))
  # Evaluators by name (clip_jax/evaluation/evaluators.py), each run every `every_steps` and at
  # the end, its metrics logged as "<name>/<metric>". Each needs its TFDS data prepared in
  # `data_dir` ("" for TFDS's default); the run checks that at start-up.
  config.evals = ml_collections.ConfigDict()
  # Zero-shot top-1, top-5, mean per-class recall; OpenAI's class names and 80 templates:
  # config.evals.imagenet = dict(type="zero_shot", dataset="imagenet2012", split="validation",
  #                              data_dir="", every_steps=5_000)
  # Zero-shot on CIFAR-10 (its 18 templates), with 256 images or texts encoded at once:
  # config.evals.cifar10 = dict(type="zero_shot", dataset="cifar10", split="test",
  #                             every_steps=2_000, batch_size=256)
  # Image <-> text Recall@1/5/10 on the 5,000 COCO images of Karpathy's test split:
  # config.evals.coco = dict(type="retrieval", dataset="coco_captions", split="test",
  #                          every_steps=5_000)
  # Linear probe: logistic regression on frozen image features, L2 strength chosen on validation:
  # config.evals.cifar10_probe = dict(type="linear_probe", dataset="cifar10",
  #                                   train_split="train[:45000]",
  #                                   validation_split="train[45000:]", test_split="test",
  #                                   every_steps=20_000)
  return config
