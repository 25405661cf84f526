"""Configuration: validated schemas in ReAgent's shape (spec section 6).

Single-key mappings name a choice, as in ReAgent: ``model: {DiscreteDQN: {...}}``,
``optimizer: {Adam: {...}}``, ``net_builder: {FullyConnected: {...}}``. Every mapping rejects unknown
keys; :func:`load_config` turns a validation failure into a :class:`BatchRLError` that names the key,
where it is, and the keys allowed there.

- :mod:`batchrl.config.base`: optimizers, networks, the ``rl`` block, preprocessing options;
- :mod:`batchrl.config.discrete`: DQN, CQL, QR-DQN, C51, BCQ, CRR, IQL;
- :mod:`batchrl.config.continuous`: SAC, TD3 (and TD3+BC);
- :mod:`batchrl.config.workflow`: the model choice and the whole workflow file.
"""

from batchrl.config.base import (
    Activation,
    AdamParameters,
    CosineAnnealingLRParameters,
    EvaluationParameters,
    ExponentialLRParameters,
    FullyConnectedParameters,
    LRSchedulerConfig,
    NetBuilderConfig,
    OptimizerConfig,
    PreprocessingOptions,
    RLParameters,
    SGDParameters,
    StepLRParameters,
    _exactly_one,
    _Strict,
    validation_error,
)
from batchrl.config.continuous import (
    ContinuousNetBuilder,
    SACModel,
    SACTrainerParameters,
    TD3Model,
    TD3TrainerParameters,
)
from batchrl.config.discrete import (
    BCQTrainerParameters,
    C51TrainerParameters,
    CQLTrainerParameters,
    CRRTrainerParameters,
    DiscreteBCQModel,
    DiscreteC51DQNModel,
    DiscreteCQLModel,
    DiscreteCRRModel,
    DiscreteDQNModel,
    DiscreteIQLModel,
    DiscreteQRDQNModel,
    DQNTrainerParameters,
    IQLTrainerParameters,
    QRDQNTrainerParameters,
)
from batchrl.config.workflow import (
    CONTINUOUS_ALGORITHMS,
    AnyModel,
    InputTableSpec,
    ModelConfig,
    PublisherConfig,
    ReaderOptions,
    WorkflowConfig,
    load_config,
    parse_config,
)

__all__ = [
    "Activation",
    "AdamParameters",
    "CosineAnnealingLRParameters",
    "EvaluationParameters",
    "ExponentialLRParameters",
    "FullyConnectedParameters",
    "LRSchedulerConfig",
    "NetBuilderConfig",
    "OptimizerConfig",
    "PreprocessingOptions",
    "RLParameters",
    "SGDParameters",
    "StepLRParameters",
    "_exactly_one",
    "_Strict",
    "validation_error",
    "ContinuousNetBuilder",
    "SACModel",
    "SACTrainerParameters",
    "TD3Model",
    "TD3TrainerParameters",
    "BCQTrainerParameters",
    "C51TrainerParameters",
    "CQLTrainerParameters",
    "CRRTrainerParameters",
    "DiscreteBCQModel",
    "DiscreteC51DQNModel",
    "DiscreteCQLModel",
    "DiscreteCRRModel",
    "DiscreteDQNModel",
    "DiscreteIQLModel",
    "DiscreteQRDQNModel",
    "DQNTrainerParameters",
    "IQLTrainerParameters",
    "QRDQNTrainerParameters",
    "CONTINUOUS_ALGORITHMS",
    "AnyModel",
    "InputTableSpec",
    "ModelConfig",
    "PublisherConfig",
    "ReaderOptions",
    "WorkflowConfig",
    "load_config",
    "parse_config",
]
