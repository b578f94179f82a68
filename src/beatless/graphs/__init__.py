"""The graph plane: customers' graph databases (LadybugDB) on graph nodes.

- `registry`: the instance and graph registries in DynamoDB (the contract);
- `placement`: which node gets a new graph (conditional writes, scale-in protection);
"""
