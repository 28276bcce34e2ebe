/// @file
/// The RabbitMQ adapter: `Connection`, `RabbitMQPublisher`, `RabbitMQSubscriber`, the URI and
/// configuration, and the topic mapping. Needs standalone Asio (target `kincir::rabbitmq`).
#pragma once

#include <kincir/config.hpp>

#include <kincir/rabbitmq/config.hpp>      // RabbitMQConfig, URIs, presets
#include <kincir/rabbitmq/connection.hpp>  // Connection, Channel
#include <kincir/rabbitmq/mapping.hpp>     // topics to exchanges and queues, messages to properties
#include <kincir/rabbitmq/publisher.hpp>   // RabbitMQPublisher
#include <kincir/rabbitmq/subscriber.hpp>  // RabbitMQSubscriber
