"""poseless.losses"""
