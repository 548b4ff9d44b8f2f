# Logged with the model as models-from-code: it names the installed class and nothing else.
import mlflow

from flows.guard.pyfunc import EnergyGuardModel

mlflow.models.set_model(EnergyGuardModel())
