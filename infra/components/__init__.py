"""One construct per capability. (Import the CDK base class as `constructs.Construct`
only from the `constructs` library; this package is `infra.components`.)"""
