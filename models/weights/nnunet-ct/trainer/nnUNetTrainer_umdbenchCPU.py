"""Written by umdbench train-baseline: nnU-Net's nnUNetTrainerAdam1en3 with a shorter schedule only.

Everything else (network, loss, augmentation, optimiser, poly LR, deep supervision, and the
network builder nnU-Net's predictor calls) is inherited unchanged from nnUNetTrainerAdam1en3.
"""

import torch

from nnunetv2.training.nnUNetTrainer.variants.optimizer.nnUNetTrainerAdam import nnUNetTrainerAdam1en3


class nnUNetTrainer_umdbenchCPU(nnUNetTrainerAdam1en3):
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 10
        self.num_iterations_per_epoch = 100
        self.num_val_iterations_per_epoch = 5
        self.save_every = max(1, self.num_epochs)
