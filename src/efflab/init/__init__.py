"""efflab.init"""
