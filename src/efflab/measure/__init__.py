"""efflab.measure"""
