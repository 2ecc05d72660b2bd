"""The built-in explainers' hook implementation (entry point ``explainers`` of the xaibench distribution)."""

from __future__ import annotations

from xaibench.explainers.ablation_cam import AblationCAM
from xaibench.explainers.attribution import DeepLift, GradientShap, GuidedBackprop, InputXGradient, IntegratedGradients, Occlusion, Saliency
from xaibench.explainers.center_prior import CenterPrior
from xaibench.explainers.eigen_cam import EigenCAM
from xaibench.explainers.gradient import GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, XGradCAM
from xaibench.explainers.guided_grad_cam import GuidedGradCAM
from xaibench.explainers.masks import MaskAnd, MaskOr
from xaibench.explainers.model_output import ModelOutput
from xaibench.explainers.random_map import RandomMap
from xaibench.explainers.score_cam import ScoreCAM
from xaibench.explainers.segx import SegX
from xaibench.registry.hookspecs import hookimpl

BUILTIN = (GradCAM, GradCAMPlusPlus, XGradCAM, HiResCAM, LayerCAM, EigenCAM, ScoreCAM, AblationCAM, RandomMap, CenterPrior, SegX, MaskAnd, MaskOr, ModelOutput)
# pixel attributions (Captum): explain the input, one grid cell each (layer "input")
BUILTIN += (Saliency, InputXGradient, IntegratedGradients, GradientShap, Occlusion, DeepLift, GuidedBackprop, GuidedGradCAM)


@hookimpl
def register_explainers(register):
    for cls in BUILTIN:
        register(cls)
