"""Docker: the engine, the course's images, and the Compose files rendered from labs.

    engine.py   connecting to the engine (clear errors when that is impossible), image names, labels
    images.py   `meshlab image base` and `meshlab image build`: a hermetic toolbox image
    relay.py    the pod's relay: a published port reaches a service on the pod's 127.0.0.1
    compose.py  `meshlab compose`: compose/NN-slug/compose.yaml from each lab.yaml

The Docker *runtime* (a lab's services as containers) is `meshlab.runtime.docker`.
"""
